"""Token files: tokenization throughput (1 and 2 workers) and peak memory of training on
them as the corpus grows, per text objective.

    python benchmarks/bench_tokenfile.py [--corpus ../shared/data/pydoc-library.txt] [--large-mb 100]
        [--objectives clm mlm span-corruption denoise nsp]

Throughput is measured on the corpus itself (repeated text would
hit the tokenizer's word cache). Corpora of 10 MB and ``--large-mb`` MB are made (in a temporary folder, never committed) by
repeating the given text. Each size is then trained for 20 steps of a tiny model per objective (clm:
GPT, mlm and nsp: BERT, span-corruption: T5, denoise: BART) in a fresh process that tokenizes
it into its token file first (mlm's with word-start marks, nsp's and denoise's a segment file
of sentences; span-corruption shares clm's); the table shows that process's peak
resident memory (ru_maxrss) and, after training, its anonymous memory (RssAnon: what the
process allocated) apart from the file-backed pages it has mapped (RssFile: page cache of
the token file, which the kernel may drop at any time; random windows fault in whole large
folios of it). Anonymous memory is what must stay flat as the corpus grows.

With ``--tile-large`` the large corpus is not tokenized (pure-Python BPE takes most of an
hour per GB on one core): its token file is written beforehand, under the key the build
looks up, by repeating the ids (and marks) of the 10 MB corpus until it is as long as the
large corpus would be; a segment file repeats the 10 MB corpus's as many times as the large
corpus holds it, its offsets shifted. The training process then maps files of the large
corpus's size, which is what the memory figure is about; its ids are those of the repeated
text up to where chunk cuts fall.
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

name, corpus, tokenizer_path, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
tok = modkit.load_tokenizer(tokenizer_path)
if name == "clm":
    from modkit_plugins.backbones.gpt import GPTOptions
    from modkit_plugins.backbones.gpt_model import GPT
    from modkit_plugins.objectives.clm import CLMOptions as Options
    from modkit_plugins.objectives.clm_impl import CausalLM as Objective
    backbone = GPT(GPTOptions(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=2, n_positions=64))
elif name in ("mlm", "nsp"):
    from modkit_plugins.backbones.bert import BERTOptions
    from modkit_plugins.backbones.bert_model import BERT
    if name == "mlm":
        from modkit_plugins.objectives.mlm import MLMOptions as Options
        from modkit_plugins.objectives.mlm_impl import MaskedLM as Objective
    else:
        from modkit_plugins.objectives.nsp import NSPOptions as Options
        from modkit_plugins.objectives.nsp_impl import NextSentence as Objective
    backbone = BERT(BERTOptions(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=2, n_positions=64))
elif name == "span-corruption":
    from modkit_plugins.backbones.t5 import T5Options
    from modkit_plugins.backbones.t5_model import T5
    from modkit_plugins.objectives.span_corruption import SpanCorruptionOptions as Options
    from modkit_plugins.objectives.span_corruption_impl import SpanCorruption as Objective
    backbone = T5(T5Options(vocab_size=tok.vocab_size + 100, d_model=64, encoder_layers=1, decoder_layers=1, n_heads=2))
else:
    from modkit_plugins.backbones.bart import BARTOptions
    from modkit_plugins.backbones.bart_model import BART
    from modkit_plugins.objectives.denoise import DenoiseOptions as Options
    from modkit_plugins.objectives.denoise_impl import Denoise as Objective
    backbone = BART(BARTOptions(vocab_size=tok.vocab_size, d_model=64, encoder_layers=1, decoder_layers=1, n_heads=2,
                                n_positions=64))
model = ModkitModel(backbone)
objective = model.add_objective(name, Objective(Options(), model.backbone, tok))
t0 = time.perf_counter()
data = objective.load_data(corpus, 64)
tokenize_s = time.perf_counter() - t0
tokens = len(data.train.text.tokens) if name in ("nsp", "denoise") else len(data.train) + len(data.heldout)
from modkit.spec import Stage
Stage = Stage(objective={"use": name}, data=str(corpus), steps=20, lr=1e-3, batch_size=8, seq_len=64, weight_decay=0.0,
              checkpoint_every=1000)
train_stage(model, objective, data, Stage, seed=0, index=0, checkpoint_dir=work, resume=False, engine=Engine())
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
kb = lambda key: int(status[key].split()[0]) / 1024  # noqa: E731
print(json.dumps({"tokens": tokens, "tokenize_s": tokenize_s,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "anon_mb": kb("RssAnon"), "file_mb": kb("RssFile")}))
'''


def make_corpus(source: Path, dest: Path, megabytes: int) -> Path:
    text = source.read_bytes()
    with open(dest, "wb") as f:
        while f.tell() < megabytes * 1_000_000:
            f.write(text)
    return dest


def _repeat(source, dest: Path, wanted: int) -> None:
    """``dest``: the array ``source`` repeated (from its start) to ``wanted`` entries."""
    import numpy as np

    with open(dest, "wb") as out:
        written = 0
        while written < wanted:
            piece = np.asarray(source[: wanted - written])
            out.write(piece.tobytes())
            written += len(piece)


def tile_token_file(tokenizer, small: Path, large: Path, folder: Path, marks=None) -> None:
    """Put a token file for ``large`` where token_file() looks, made by repeating ``small``'s ids
    (and marks) in proportion to the corpora's sizes (both repeat the same text)."""
    from modkit.tokenfile import companion, function_tag, token_file, token_file_path

    base = token_file(tokenizer, small, folder=folder, workers=2, marks=marks)
    wanted = int(len(base) * large.stat().st_size / small.stat().st_size)
    path = token_file_path(tokenizer, large, folder, tag=function_tag(marks) if marks else "")
    if marks:
        _repeat(base.marks, companion(path, "marks"), wanted)
    _repeat(base.ids, path, wanted)  # last: the ids file is what says the token file is whole
    path.with_suffix(path.suffix + ".json").write_text(json.dumps({"corpus": str(large), "tokens": wanted}))


def tile_segment_file(tokenizer, small: Path, large: Path, folder: Path) -> None:
    """Put a segment file (sentences of documents) for ``large`` where segment_file() looks:
    ``small``'s repeated as many whole times as ``large`` is larger, offsets shifted."""
    import numpy as np
    from modkit.segmentfile import segment_file
    from modkit.tokenfile import companion, function_tag, token_file_path
    from modkit_plugins.objectives.pairs import sentences

    base = segment_file(tokenizer, small, sentences, folder=folder, workers=2)
    copies = max(1, round(large.stat().st_size / small.stat().st_size))
    path = token_file_path(tokenizer, large, folder, kind="segments", tag=function_tag(sentences))
    for name, offsets, step in (("segments", base.segments, len(base.tokens)),
                                ("documents", base.documents, base.n_segments)):
        with open(companion(path, name), "wb") as out:
            out.write(np.asarray(offsets[:1]).tobytes())
            for c in range(copies):
                out.write((np.asarray(offsets[1:]) + c * step).tobytes())
    _repeat(base.tokens.ids, path, len(base.tokens) * copies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pydoc-library.txt")
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--tile-large", action="store_true",
                        help="write the large corpus's token file by repeating the 10 MB one's ids")
    parser.add_argument("--objectives", nargs="+", default=["clm"],
                        choices=["clm", "mlm", "span-corruption", "denoise", "nsp"])
    args = parser.parse_args()
    from modkit.tokenfile import token_file
    from modkit_plugins.objectives.masking import word_starts
    from modkit_plugins.tokenizers.bpe import BPEOptions
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = tmp / "sample.txt"
        sample.write_bytes(args.corpus.read_bytes()[:1_000_000])
        specials = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
        tokenizer = BPETokenizer.train([sample], BPEOptions(vocab_size=2000, special_tokens=specials))
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
            folder = tmp / "cache2" / "tokens"
            if {"clm", "span-corruption"} & set(args.objectives):
                tile_token_file(tokenizer, small, large, folder)
            if "mlm" in args.objectives:
                tile_token_file(tokenizer, small, large, folder, marks=word_starts)
            if {"nsp", "denoise"} & set(args.objectives):
                tile_segment_file(tokenizer, small, large, folder)
        print("\n| objective | corpus | tokens | tokenize (s) | peak RSS (MB) | anonymous RSS after training (MB) "
              "| file-backed RSS after training (MB) |\n|---|---:|---:|---:|---:|---:|---:|")
        for name in args.objectives:
            for corpus in (small, large):
                env_cache = {"MODKIT_CACHE": str(tmp / "cache2")}
                done = subprocess.run([sys.executable, "-c", TRAIN, name, str(corpus), str(tmp / "tokenizer.json"),
                                       str(tmp / "work" / name)], capture_output=True, text=True,
                                      env={**os.environ, **env_cache})
                if done.returncode:
                    sys.exit(done.stderr)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {name} | {corpus.stat().st_size / 1e6:.0f} MB | {r['tokens']:,} | {r['tokenize_s']:.0f} | "
                      f"{r['peak_rss_mb']:.0f} | {r['anon_mb']:.0f} | {r['file_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
