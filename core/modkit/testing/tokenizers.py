"""Tokenizer contract: ids in range, stable round trips, save/load, foreign files refused."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

SAMPLE_TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "", "  spaces  and\ttabs\n",
                "numbers 3.14 and 1,000", "caf\u00e9 \u00fcber"]

#: files in no tokenizer's format: every from_file must answer None, not raise. The last is
#: shaped like a Hugging Face tokenizer.json with a model type no tokenizer reads, so a reader
#: must look at the type; a real format (Unigram, WordPiece...) is never foreign to every
#: tokenizer, so cross-format checks pass what other tokenizers save as ``foreign_files``.
_FOREIGN = {
    "blob.bin": bytes(range(256)) * 4,
    "other.json": json.dumps({"hello": 1, "model": "not a tokenizer"}).encode(),
    "unknown-model.json": json.dumps({"version": "1.0", "model": {
        "type": "NoSuchModel", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}).encode(),
}


def check_tokenizer(tokenizer, texts: Sequence[str] = SAMPLE_TEXTS, *,
                    foreign_files: Sequence[Path | tuple[Path, object]] = ()) -> None:
    """Ids in range; ``encode_batch`` == ``encode``; ``token_to_id``/``id_to_token`` inverse;
    decoding is a stable round trip (re-encoding the decoded text gives the same ids); every
    special token has an id; ``save`` -> ``from_file`` gives the same ids and specials; and
    ``from_file`` does not misread other formats: for a few files in no format, and for each of
    ``foreign_files``, it answers None without raising. A foreign file given with the tokenizer
    that wrote it, ``(path, owner)``, may also be read, if the result encodes ``texts`` exactly as
    ``owner`` does: a tokenizer that reads a second format (a Unigram tokenizer.json, a BPE with
    byte fallback) is judged on reading it right, not on declining it."""
    unk = tokenizer.special_id("unk")
    for text in texts:
        ids = tokenizer.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids), \
            f"encode({text!r}) gave ids outside [0, {tokenizer.vocab_size})"
        decoded = tokenizer.decode(ids)
        assert isinstance(decoded, str), f"decode gave {type(decoded).__name__}, not str"
        if unk is not None and unk in ids:
            continue  # an unk stands for text the vocabulary lost: nothing to round-trip
        assert tokenizer.encode(decoded) == ids, \
            f"round trip: encode(decode(encode({text!r}))) != encode({text!r}) (decoded {decoded!r})"
    assert tokenizer.encode_batch(list(texts)) == [tokenizer.encode(t) for t in texts], "encode_batch != encode"
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i)
        assert token is None or tokenizer.token_to_id(token) == i, \
            f"token_to_id(id_to_token({i})) = {tokenizer.token_to_id(token)} (token {token!r})"
    for role, token in tokenizer.special_tokens.items():
        assert tokenizer.token_to_id(token) is not None, f"special token {role}={token!r} has no id"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        again = type(tokenizer).from_file(path)
        assert again is not None, f"{type(tokenizer).__name__}.from_file does not read what save wrote"
        assert [again.encode(t) for t in texts] == [tokenizer.encode(t) for t in texts], "ids change after save/load"
        assert again.special_tokens == tokenizer.special_tokens, "special tokens change after save/load"
        foreign = [f if isinstance(f, tuple) else (f, None) for f in foreign_files]
        for name, content in _FOREIGN.items():
            (Path(tmp) / name).write_bytes(content)
            foreign.append((Path(tmp) / name, None))
        for other, owner in foreign:
            try:
                got = type(tokenizer).from_file(Path(other))
            except Exception as e:  # noqa: BLE001 - any exception breaks the contract
                raise AssertionError(f"{type(tokenizer).__name__}.from_file({Path(other).name}) raised "
                                     f"{type(e).__name__}: {e}; a file in another format must give None") from e
            if got is None:
                continue
            assert owner is not None, \
                f"{type(tokenizer).__name__}.from_file read {Path(other).name}, a file in another format"
            assert [got.encode(t) for t in texts] == [owner.encode(t) for t in texts], \
                f"{type(tokenizer).__name__}.from_file read {Path(other).name} (written by " \
                f"{type(owner).__name__}) but encodes differently"
