"""mlm, nsp, span-corruption and denoise read their corpus through token files: tokenized once
per build (the preflight's reading is the stage's), and not again by the next build."""
from __future__ import annotations

import os

import modkit.tokenfile as tokenfile
from modkit.builder.build import build
from specs import write_tiny_bert_spec


def counting_encodes(monkeypatch) -> list:
    """Every tokenization of a corpus into a token or segment file, as it happens."""
    calls, real = [], tokenfile._encoded

    def counted(tokenizer, chunks, workers, encode):
        calls.append(encode)
        return real(tokenizer, chunks, workers, encode)

    monkeypatch.setattr(tokenfile, "_encoded", counted)
    return calls


def test_an_mlm_and_nsp_build_tokenizes_its_corpus_once_and_the_next_build_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("MODKIT_CACHE", str(tmp_path / "cache"))
    calls = counting_encodes(monkeypatch)
    spec = write_tiny_bert_spec(tmp_path, '[{ use = "mlm", whole_word_mask = true }, { use = "nsp" }]',
                                "[export]\nonnx = false")
    first = build(spec, tmp_path / "one", progress=False, echo=lambda m: None)
    # the preflight, the stage and the export all read them: one word-start file, one sentence file
    assert len(calls) == 2
    files = sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir())
    assert [n for n in files if n.startswith("tokens-") and n.endswith(".u16")] and \
        [n for n in files if n.startswith("segments-") and n.endswith(".u16")]
    stamps = {n: os.stat(tmp_path / "cache" / "tokens" / n).st_mtime_ns for n in files}
    again = build(spec, tmp_path / "two", progress=False, echo=lambda m: None)
    assert len(calls) == 2  # the second build reads the cached files
    assert {n: os.stat(tmp_path / "cache" / "tokens" / n).st_mtime_ns for n in files} == stamps
    for key in ("losses", "loss_first_10", "loss_last_10", "eval"):
        assert again["stages"][0][key] == first["stages"][0][key], key
