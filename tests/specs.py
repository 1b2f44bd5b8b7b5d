"""Spec text the tests share: the tiny word-end BPE tokenizer and GPT that most builds use."""
from __future__ import annotations

from pathlib import Path

TINY_GPT = Path(__file__).resolve().parents[1] / "examples" / "tiny-gpt"


def tiny_gpt_parts(*, n_positions: int = 64, extra_backbone: str = "") -> str:
    """The [tokenizer] (300 BPE tokens trained on corpus.txt) and [backbone] (2 layers of 32)
    tables, as TOML."""
    return f'''
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = ["corpus.txt"]
[backbone]
use = "gpt"
d_model = 32
n_layers = 2
n_heads = 2
n_positions = {n_positions}
{extra_backbone}
'''


#: 40 documents of 3 to 6 short sentences, for BERT's sentence pairs
DOCS = "\n\n".join(
    " ".join(f"Doc{d} sentence{s} word{(d * 7 + s) % 11}." for s in range(3 + d % 4)) for d in range(40))


def write_tiny_bert_spec(folder: Path, objective: str, extra: str = "") -> Path:
    """``folder/spec.toml``: a 200-token WordPiece and a 1-layer BERT of 32 trained on DOCS with
    ``objective`` (inline TOML) for 6 steps of 8 windows of 32; ``extra`` goes into the stage."""
    (folder / "docs.txt").write_text(DOCS)
    spec = folder / "spec.toml"
    spec.write_text(f"""
name = "tiny-bert"
[tokenizer]
use = "wordpiece"
vocab_size = 200
min_frequency = 1
train_on = "docs.txt"
[backbone]
use = "bert"
d_model = 32
n_layers = 1
n_heads = 2
[[stages]]
objective = {objective}
data = "docs.txt"
steps = 6
batch_size = 8
seq_len = 32
{extra}
""")
    return spec


def write_corpus(folder: Path, chars: int) -> Path:
    """The first ``chars`` characters of tiny-gpt's corpus as ``folder/corpus.txt``."""
    corpus = folder / "corpus.txt"
    corpus.write_text((TINY_GPT / "corpus.txt").read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return corpus


def build_from_checkpoint(folder: Path, checkpoint: Path, objective: str, data: str, seq_len: int) -> dict:
    """Build ``folder/out`` from a Hugging Face ``checkpoint`` as it is (no training step), with
    ``objective`` (an inline TOML table) on ``folder/data``; the manifest."""
    import modkit

    (folder / "spec.toml").write_text(f'name = "as-is"\n[backbone]\nfrom = "{checkpoint}"\n[[stages]]\n'
                                      f'objective = {objective}\ndata = "{data}"\nsteps = 0\nseq_len = {seq_len}\n')
    return modkit.build(folder / "spec.toml", folder / "out", progress=False, echo=lambda _: None)


def assert_transformers_loads_quietly(folder: Path) -> None:
    """transformers loads the Hugging Face ``folder`` (config, model, tokenizer) in a fresh
    process without one warning or log line, the tokenizers library's own prints included."""
    import subprocess
    import sys

    code = f"""
import warnings
warnings.simplefilter("always")
import transformers
transformers.utils.logging.disable_progress_bar()  # "Loading weights" is no warning
config = transformers.AutoConfig.from_pretrained({str(folder)!r})
getattr(transformers, config.architectures[0]).from_pretrained({str(folder)!r})  # the class it names
tok = transformers.AutoTokenizer.from_pretrained({str(folder)!r})
print(tok("a socket")["input_ids"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("["), proc.stdout  # the ids alone


class Interrupt(Exception):
    """Stands for a build killed mid-stage."""


def killed_after_step(step: int, monkeypatch, run) -> None:
    """Call ``run()`` (a build) with its training stopped right after step ``step``, as a kill
    would stop it: the work folder keeps what the last checkpoint saved."""
    import pytest

    import modkit.builder.build as build_module

    real = build_module.train_stage

    def crashing(*args, on_step, **kw):
        def tick(record):
            on_step(record)
            if record.step == step:
                raise Interrupt
        return real(*args, on_step=tick, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "train_stage", crashing)
        with pytest.raises(Interrupt):
            run()
