"""Derive the tiny-gpt example's data from the Python library docs (shared/data).

corpus.txt       the first ~900 KB of pydoc-library.txt, for pretraining with `clm`;
modules.jsonl    prose paragraphs labelled with the module whose page they come from, for
                 `classify` (a few modules with long pages and distinct subjects).

Run: python examples/tiny-gpt/make_data.py ../shared/data/pydoc-library.txt
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MODULES = ["argparse", "datetime", "socket", "sqlite3", "unittest"]
PAGE_TITLE = re.compile(r"^:mod:`([\w.]+)` --- ")


def pages(lines: list[str]):
    """(module, page lines) for every page whose title is ':mod:`name` --- ...'."""
    starts = [i for i, line in enumerate(lines)
              if PAGE_TITLE.match(line) and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"="}]
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        yield PAGE_TITLE.match(lines[a]).group(1), lines[a + 2: b]


def prose_paragraphs(lines: list[str]):
    """Blocks of unindented text that are not directives, headings or tables."""
    block: list[str] = []
    for line in lines + [""]:
        if line.strip():
            block.append(line)
            continue
        text = " ".join(block)
        if block and not block[0].startswith((" ", "..", "=", "-", "+", "*", "|", ":")) \
                and len(text.split()) >= 8:
            yield " ".join(text.split()[:60])
        block = []


def main(source: str) -> None:
    here = Path(__file__).parent
    text = Path(source).read_text(encoding="utf-8")
    cut = text.rfind("\n", 0, 900_000)
    (here / "corpus.txt").write_text(text[:cut + 1], encoding="utf-8")
    records = []
    for module, lines in pages(text.splitlines()):
        if module in MODULES:
            records += [{"text": p, "label": module} for p in prose_paragraphs(lines)]
    # Records stay in page order: the held-back every-10th line then covers every module.
    with open(here / "modules.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = {m: sum(r["label"] == m for r in records) for m in MODULES}
    print(f"corpus.txt: {cut + 1} bytes; modules.jsonl: {len(records)} paragraphs {counts}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pydoc-library.txt")
