"""The built-in tasks' records: what each objective's export writes into the manifest and
what its runtime task reads back (``Task.record``), typed. Torch-free: serving imports it."""
from __future__ import annotations

from pydantic import Field

from modkit.manifest import TaskRecord


class GenerateRecord(TaskRecord):
    eos_token_id: int | None = None
    pad_token_id: int | None = None


class ClassifyRecord(TaskRecord):
    #: how the inputs are laid out: "single", "pair", "choice"... (objectives/formats.py)
    format: str = "single"
    labels: list[str] | None = None
    prepend_ids: list[int] = Field(default_factory=list)
    delimiter_ids: list[int] = Field(default_factory=list)
    append_ids: list[int] = Field(default_factory=list)
    use_template: bool = False
    pad_token_id: int = 0


class FillMaskRecord(TaskRecord):
    mask_token_id: int
    pad_token_id: int = 0
    top_k: int = 5


class NextSentenceRecord(TaskRecord):
    labels: list[str]
    pad_token_id: int = 0


class Seq2SeqRecord(TaskRecord):
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int = 0
    max_new_tokens: int | None = None
    #: where ids past the tokenizer's vocabulary start (T5's sentinels): written <extra_id_k>
    sentinel_base: int | None = None
    #: special tokens in the input are read as such (BART's denoising reads <mask>)
    allow_special: bool = False


class TokenClassifyRecord(TaskRecord):
    tags: list[str]
    pad_token_id: int = 0


class EmbedRecord(TaskRecord):
    pad_token_id: int = 0
    pooling: str = "mean"
    normalize: bool = True
