"""Token files: tokenization throughput (1 and 2 workers) and peak memory of clm training
as the corpus grows.

    python benchmarks/bench_tokenfile.py [--corpus ../shared/data/pydoc-library.txt] [--large-mb 100]

Throughput is measured on the corpus itself (repeated text would
hit the tokenizer's word cache). Corpora of 10 MB and ``--large-mb`` MB are made (in a temporary folder, never committed) by
repeating the given text. Each size is then trained for 20 clm steps of a tiny GPT in a fresh
process that tokenizes it into a token file first; the table shows that process's peak
resident memory (ru_maxrss) and, after training, its anonymous memory (RssAnon: what the
process allocated) apart from the file-backed pages it has mapped (RssFile: page cache of
the token file, which the kernel may drop at any time; random windows fault in whole large
folios of it). Anonymous memory is what must stay flat as the corpus grows.

With ``--tile-large`` the large corpus is not tokenized (pure-Python BPE takes most of an
hour per GB on one core): its token file is written beforehand, under the key the build
looks up, by repeating the ids of the 10 MB corpus until it is as long as the large corpus
would be. The training process then maps a file of the large corpus's size, which is what
the memory figure is about; its ids are those of the repeated text up to where chunk cuts
fall.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = r'''
import json, resource, sys, time
from pathlib import Path
import torch
import modkit
from modkit.builder.training.engine import Engine, train_stage
from modkit.nn.model import ModkitModel
from modkit_plugins.backbones.gpt import GPTOptions
from modkit_plugins.objectives.clm import CLMOptions
from modkit_plugins.objectives.clm_impl import CausalLM
from modkit_plugins.backbones.gpt_model import GPT

corpus, tokenizer_path, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
tok = modkit.load_tokenizer(tokenizer_path)
model = ModkitModel(GPT(GPTOptions(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=2, n_positions=64)))
objective = model.add_objective("clm", CausalLM(CLMOptions(), model.backbone, tok))
t0 = time.perf_counter()
data = objective.load_data(corpus, 64)
tokenize_s = time.perf_counter() - t0
class Stage: steps, lr, batch_size, seq_len, weight_decay, warmup_steps, max_grad_norm, checkpoint_every, accumulate = 20, 1e-3, 8, 64, 0.0, 0, 1.0, 1000, 1
train_stage(model, objective, data, Stage, seed=0, index=0, checkpoint_dir=work, resume=False, engine=Engine())
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
kb = lambda key: int(status[key].split()[0]) / 1024  # noqa: E731
print(json.dumps({"tokens": len(data.train) + len(data.heldout), "tokenize_s": tokenize_s,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "anon_mb": kb("RssAnon"), "file_mb": kb("RssFile")}))
'''


def make_corpus(source: Path, dest: Path, megabytes: int) -> Path:
    text = source.read_bytes()
    with open(dest, "wb") as f:
        while f.tell() < megabytes * 1_000_000:
            f.write(text)
    return dest


def tile_token_file(tokenizer, small: Path, large: Path, folder: Path) -> None:
    """Put a token file for ``large`` where token_file() looks, made by repeating ``small``'s ids
    in proportion to the corpora's sizes (both repeat the same text)."""
    import numpy as np
    from modkit.tokenfile import token_file, token_file_path

    base = token_file(tokenizer, small, folder=folder, workers=2)
    wanted = int(len(base) * large.stat().st_size / small.stat().st_size)
    path = token_file_path(tokenizer, large, folder)
    with open(path, "wb") as out:
        written = 0
        while written < wanted:
            piece = np.asarray(base.ids[: wanted - written])
            out.write(piece.tobytes())
            written += len(piece)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps({"corpus": str(large), "tokens": written}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pydoc-library.txt")
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--tile-large", action="store_true",
                        help="write the large corpus's token file by repeating the 10 MB one's ids")
    args = parser.parse_args()
    from modkit.tokenfile import token_file
    from modkit_plugins.tokenizers.bpe import BPEOptions
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = tmp / "sample.txt"
        sample.write_bytes(args.corpus.read_bytes()[:1_000_000])
        tokenizer = BPETokenizer.train([sample], BPEOptions(vocab_size=2000))
        tokenizer.save(tmp / "tokenizer.json")
        small = make_corpus(args.corpus, tmp / "small.txt", 10)
        print("| workers | corpus | seconds | MB/s | tokens |\n|---:|---:|---:|---:|---:|")
        for workers in (1, 2):  # the corpus itself: repeated text would hit the tokenizer's word cache
            t0 = time.perf_counter()
            tf = token_file(tokenizer, args.corpus, folder=tmp / f"cache{workers}" / "tokens", workers=workers)
            spent = time.perf_counter() - t0
            mb = args.corpus.stat().st_size / 1e6
            print(f"| {workers} | {mb:.0f} MB | {spent:.1f} | {mb / spent:.2f} | {len(tf):,} |", flush=True)
        large = make_corpus(args.corpus, tmp / "large.txt", args.large_mb)
        if args.tile_large:
            tile_token_file(tokenizer, small, large, tmp / "cache2" / "tokens")
        print("\n| corpus | tokens | tokenize (s) | peak RSS (MB) | anonymous RSS after training (MB) "
              "| file-backed RSS after training (MB) |\n|---:|---:|---:|---:|---:|---:|")
        for corpus in (small, large):
            env_cache = {"MODKIT_CACHE": str(tmp / "cache2")}


            done = subprocess.run([sys.executable, "-c", TRAIN, str(corpus), str(tmp / "tokenizer.json"),
                                   str(tmp / "work")], capture_output=True, text=True, env={**os.environ, **env_cache})
            if done.returncode:
                sys.exit(done.stderr)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {corpus.stat().st_size / 1e6:.0f} MB | {r['tokens']:,} | {r['tokenize_s']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['anon_mb']:.0f} | {r['file_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
