"""SentencePiece training: modkit's trainer against ``spm_train`` with the same options.

    python benchmarks/bench_spm_training.py [VOCAB] [TRAIN_CHARS] [unigram|bpe] [TEXT]

Both train on the first TRAIN_CHARS characters of TEXT (../shared/data/pydoc-library.txt; one
thread); tokens per character is measured on the 300,000 characters after them, line by line.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "pydoc-library.txt"


def main() -> None:
    import sentencepiece

    from modkit_plugins.tokenizers.sentencepiece import SentencePieceOptions
    from modkit_plugins.tokenizers.spm_model import SentencePieceTokenizer

    vocab = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
    model_type = sys.argv[3] if len(sys.argv) > 3 else "unigram"
    text = Path(sys.argv[4] if len(sys.argv) > 4 else TEXT).read_text(encoding="utf-8")
    lines = [line for line in text[size:size + 300_000].splitlines() if line.strip()]
    chars = sum(len(line) for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        train = Path(folder) / "train.txt"
        train.write_text(text[:size], encoding="utf-8")
        start = time.perf_counter()
        sentencepiece.SentencePieceTrainer.train(input=str(train), model_prefix=f"{folder}/ref", vocab_size=vocab,
                                                 model_type=model_type, num_threads=1, minloglevel=2)
        t_ref = time.perf_counter() - start
        reference = sentencepiece.SentencePieceProcessor(model_file=f"{folder}/ref.model")
        start = time.perf_counter()
        ours = SentencePieceTokenizer.train([train], SentencePieceOptions(vocab_size=vocab, model_type=model_type))
        t_ours = time.perf_counter() - start
    a = sum(len(reference.encode(line)) for line in lines) / chars
    b = sum(len(ours.encode(line)) for line in lines) / chars
    print(f"{model_type}, {vocab} pieces, {size:,} training characters: tokens/char sentencepiece {a:.4f} "
          f"({t_ref:.1f} s), modkit {b:.4f} ({t_ours:.1f} s); modkit / sentencepiece {b / a:.4f}")


if __name__ == "__main__":
    main()
