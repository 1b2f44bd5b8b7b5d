"""A checkpoint's generation defaults: what ``generate`` does when a call leaves an option unset.

transformers keeps them in ``generation_config.json`` (or, in checkpoints written before that
file existed, among the keys of ``config.json``): BART forces its eos as the last token,
bart-large-cnn searches 4 beams with ``no_repeat_ngram_size = 3`` and ``length_penalty = 2``.
modkit reads the same keys when it loads a checkpoint, keeps them with the model, writes them
into an artifact's manifest (``"generation"``) and applies them in the torch ``generate`` and in
the torch-free runtime alike; an option the caller gives always wins.

No torch here: the runtime reads these records too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from modkit.errors import ArtifactError
from modkit.options import Options


TokenId = Annotated[int, Field(ge=0)]
TokenList = Annotated[list[TokenId], Field(min_length=1)]


class GenerationDefaults(Options):
    """The generation keys modkit takes from a checkpoint; a key left out (None) is unset, and
    the call's option or modkit's own default applies."""

    eos_token_id: int | None = Field(None, ge=0, description="Decoding stops at this token.")
    pad_token_id: int | None = Field(None, ge=0, description="Fills rows that stopped (default the eos).")
    decoder_start_token_id: int | None = Field(None, ge=0, description="An encoder-decoder's first decoder input.")
    forced_bos_token_id: int | None = Field(None, ge=0, description="The only allowed first new token.")
    forced_eos_token_id: int | None = Field(None, ge=0, description="The only allowed last of max_new_tokens.")
    no_repeat_ngram_size: int | None = Field(None, ge=0, description="No n-gram of this size occurs twice (0: off).")
    num_beams: int | None = Field(None, ge=1, description="Beam search with this many beams (1: none).")
    length_penalty: float | None = Field(None, description="Beam search: a finished beam scores sum(log p) / length ** this.")
    early_stopping: bool | Literal["never"] | None = Field(None, description="Beam search stopping rule.")
    min_length: int | None = Field(None, ge=0, description="No eos before the sequence (prompt or decoder "
                                                         "start included) is this long.")
    max_length: int | None = Field(None, ge=1, description="The longest sequence (prompt or decoder start "
                                                         "included) when the call gives no max_new_tokens.")
    repetition_penalty: float | None = Field(None, gt=0, description="A token already in the sequence scores "
                                                                   "s / p (s > 0) or s * p (1: off).")
    bad_words_ids: list[TokenList] | None = Field(None, min_length=1, description="Token sequences never generated.")
    suppress_tokens: list[TokenId] | None = Field(None, description="Tokens never generated.")
    begin_suppress_tokens: list[TokenId] | None = Field(None, description="Tokens never generated first.")


KEYS = tuple(GenerationDefaults.model_fields)


def generation_record(values: dict[str, Any], source: str, vocab_size: int | None = None) -> dict[str, Any]:
    """The generation keys of ``values`` (a generation_config.json or config.json, or a manifest's
    record), validated; unset keys left out. ``source`` names the file in errors; ``vocab_size``
    (where known) bounds the banned words, which transformers refuses past the vocabulary."""
    picked = {k: values[k] for k in KEYS if values.get(k) is not None}
    for key in ("eos_token_id", "pad_token_id"):
        if isinstance(picked.get(key), list):  # transformers allows several; modkit stops at one
            if len(set(picked[key])) > 1:
                raise ArtifactError(f"{source}: {key} {picked[key]}: several end tokens are not supported")
            picked[key] = picked[key][0]
    try:
        record = GenerationDefaults.model_validate(picked).model_dump(exclude_none=True)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ArtifactError(f"{source}: generation settings: {problems}") from None
    _check_tokens(record, source, vocab_size)
    return record


def _check_tokens(record: dict[str, Any], source: str, vocab_size: int | None) -> None:
    """What transformers refuses: a forced token that is also suppressed (every score would be
    -inf at that step), a banned word outside the vocabulary."""
    for key in ("forced_bos_token_id", "forced_eos_token_id"):
        if key in record and record[key] in record.get("suppress_tokens", ()):
            raise ArtifactError(f"{source}: {key} {record[key]} is also in suppress_tokens")
    if not isinstance(vocab_size, int):
        return
    outside = sorted({t for word in record.get("bad_words_ids", ()) for t in word if t >= vocab_size})
    if outside:
        raise ArtifactError(f"{source}: bad_words_ids: tokens {outside} are outside the vocabulary ({vocab_size})")


def begin_step(prefix_length: int, forced_bos_token_id: int | None) -> int:
    """The new token ``begin_suppress_tokens`` applies to after a prefix (prompt or decoder start)
    of ``prefix_length``, as transformers' ``begin_index`` counts it: the first, or the second
    where a forced first token follows a one-token prefix."""
    return 1 if prefix_length <= 1 and forced_bos_token_id is not None else 0


def read_hf_generation(folder: str | Path, config: dict[str, Any]) -> dict[str, Any]:
    """The defaults transformers' ``generate`` uses for the checkpoint in ``folder`` (whose
    config.json is ``config``): generation_config.json where the folder has one, else the
    generation keys of config.json, as ``from_pretrained`` chooses."""
    path = Path(folder) / "generation_config.json"
    if not path.exists():
        return generation_record(config, str(Path(folder) / "config.json"), config.get("vocab_size"))
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return generation_record(values, str(path), config.get("vocab_size"))
