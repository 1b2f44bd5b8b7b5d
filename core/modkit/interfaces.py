"""The four interfaces a plugin implements: Tokenizer, Backbone, Objective, PeftMethod.

This module imports no torch, so the registry and the runtime can use it; the torch types in
signatures are annotations only.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

from modkit.fileio import atomic_write_text

if TYPE_CHECKING:
    import torch
    from modkit.options import Options
    from modkit.tokenization import Encoding, Template


class Tokenizer(ABC):
    """Text <-> ids. Pure Python (no torch): the runtime serves artifacts with it."""

    #: role -> token text, roles among bos, eos, pad, unk, mask, cls, sep
    special_tokens: dict[str, str]

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Ids of ``text``. Special-token strings in it are plain text unless ``allow_special``."""

    @abstractmethod
    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str: ...

    @abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abstractmethod
    def id_to_token(self, id: int) -> str | None: ...

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The tokenizer as a Hugging Face ``tokenizer.json`` document."""

    @classmethod
    @abstractmethod
    def train(cls, files: Sequence[str | Path], options: Options, progress=None) -> Tokenizer:
        """Learn a vocabulary from text files; ``progress(done, total)`` may be called."""

    @classmethod
    @abstractmethod
    def from_file(cls, path: Path) -> Tokenizer | None:
        """Load ``path`` if it is in a format this tokenizer reads, else return None."""

    #: special tokens placed around one text or a pair (BERT's [CLS] a [SEP] b [SEP]);
    #: None places none
    template: Template | None = None

    def encode_batch(self, texts: Iterable[str], *, allow_special: bool = False) -> list[list[int]]:
        return [self.encode(t, allow_special=allow_special) for t in texts]

    def encode_with_offsets(
        self, text: str, *, allow_special: bool = False
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of ``text`` and each token's ``(start, end)`` character span in it."""
        raise NotImplementedError(f"{type(self).__name__} does not report offsets")

    def encode_plus(self, text: str, pair: str | None = None, *, add_special_tokens: bool = True,
                    max_length: int | None = None, return_offsets: bool = False,
                    allow_special: bool = False) -> Encoding:
        """One text or a pair with the template's special tokens and segment ids, truncated
        to ``max_length`` tokens (the longer text loses tokens first)."""
        from modkit.tokenization import encode_plus

        return encode_plus(self, text, pair, add_special_tokens=add_special_tokens, max_length=max_length,
                           return_offsets=return_offsets, allow_special=allow_special)

    def batch_encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **options: Any) -> dict[str, Any]:
        """Texts (or pairs) as padded int64 numpy arrays ``input_ids``, ``attention_mask``,
        ``token_type_ids`` (and ``offsets``); see :func:`modkit.tokenization.batch_encode`."""
        from modkit.tokenization import batch_encode

        return batch_encode(self, texts, pairs, **options)

    def special_id(self, role: str) -> int | None:
        """Id of the special token with that role (``"pad"``, ``"eos"``...), or None."""
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), ensure_ascii=False, indent=1))


class Backbone:
    """A torch.nn.Module mapping ids to hidden states; concrete backbones subclass both.

    ``forward(input_ids, attention_mask=None, *, output_hidden_states=False,
    output_attentions=False, past_key_values=None, use_cache=False, **family_inputs)``
    returns a :class:`modkit.nn.outputs.ModelOutput` with ``last_hidden_state`` and, on
    request, ``hidden_states``, ``attentions`` and ``past_key_values``. Projections built
    from :mod:`modkit.nn.blocks` carry role names (``attn.q``...), which PEFT methods target.
    """

    config: Options
    d_model: int
    vocab_size: int
    is_decoder: ClassVar[bool] = False  # causal: can generate token by token
    is_encoder_decoder: ClassVar[bool] = False

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from hidden states (usually the tied input embedding)."""
        raise NotImplementedError(f"{type(self).__name__} has no language-model head")


class Objective:
    """A training task: turns raw data into batches, owns its heads, computes the loss.

    Concrete objectives subclass torch.nn.Module too; their parameters are the task heads.
    """

    #: what `modkit run` does with the exported graph: generate, classify, fill-mask, embed, seq2seq
    task: ClassVar[str]

    def __init__(self, options: Options, backbone: Backbone, tokenizer: Tokenizer):
        self.options = options

    def load_data(self, path: Path, seq_len: int) -> Any:
        """Read and tokenize a data file once per stage; the result goes to :meth:`batch`."""
        raise NotImplementedError

    def batch(self, data: Any, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One training batch, drawn with ``generator`` (so builds are reproducible)."""
        raise NotImplementedError

    def loss(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss and named figures to log."""
        raise NotImplementedError

    def evaluate(self, backbone: Backbone, data: Any) -> dict[str, float]:
        """Figures on held-back data (may be empty). ``backbone`` may be on a GPU: build tensors
        on ``modkit.data.device_of(backbone)``."""
        return {}

    def load_eval_data(self, path: Path, seq_len: int) -> Any:
        """A stage's ``eval_data`` file, all of it held back (what :meth:`eval_batches` and
        :meth:`evaluate` read). By default :meth:`load_data`'s result."""
        return self.load_data(path, seq_len)

    def eval_batches(self, data: Any, batch_size: int, limit: int) -> Iterable[dict[str, torch.Tensor]]:
        """Batches of at most ``limit`` held-back examples, in a fixed order (CPU tensors, like
        :meth:`batch`). The build reports the mean of :meth:`loss` over them as ``eval_loss``
        (and its exp as ``eval_perplexity``). By default none: only :meth:`evaluate` runs."""
        return ()

    def logits(self, backbone: Backbone, output: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The task's output from the backbone's: vocabulary logits, class logits... This is
        what the exported ONNX graph computes and what the parity check compares."""
        raise NotImplementedError

    def export_inputs(self, data: Any) -> dict[str, torch.Tensor]:
        """A few held-back inputs (input_ids, attention_mask) for the ONNX parity check."""
        raise NotImplementedError

    def hf_head(self, backbone: Backbone) -> dict[str, Any] | None:
        """The task head in family-neutral terms, for ``modkit export-hf``; None if it has no
        counterpart in transformers. ``{"kind": "causal-lm"}``, ``{"kind": "masked-lm"}``, or
        ``{"kind": "sequence-classification" | "token-classification", "weight": W, "bias": b,
        "labels": [...], "pooling": "pooler" | "first" | "last"}``. The backbone's checkpoint
        format decides whether its transformers classes can carry it (``with_head``)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the task: at least ``{"task": ...}``, plus what the
        runtime needs to prepare inputs (e.g. ``append_ids``) and read outputs (``labels``)."""
        return {"task": self.task}


class PeftMethod:
    """A parameter-efficient fine-tuning method attached to a model in place."""

    def __init__(self, options: Options):
        self.options = options

    def apply(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """Insert this method's modules; return the ones holding its own (trainable) weights,
        not the frozen layers they wrap."""
        raise NotImplementedError

    def merge(self, model: torch.nn.Module) -> None:
        """Fold the method into the base weights and remove its modules, where it can."""

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: torch.nn.Module):
        """Attach a Hugging Face PEFT adapter (``adapter_config.json`` as ``config``, its
        safetensors as ``weights``) to ``model``; return ``(method, modules)`` as ``apply``
        would, or None when ``config["peft_type"]`` is not this method's."""
        return None

    @classmethod
    def to_hf_peft(cls, model: torch.nn.Module, hf_weights: dict):
        """This method's modules on ``model`` as a Hugging Face PEFT adapter: ``(config,
        weights)`` named after ``hf_weights`` (the base checkpoint ``export-hf`` writes), or None
        when the model has none. Raise UserError if peft cannot express them."""
        return None


class Task:
    """How ``modkit run`` and ``modkit serve`` serve one task, without torch (numpy + onnxruntime).

    Registered through ``modkit_register_tasks`` under the name an objective's ``describe()``
    gives as ``"task"``. The runtime makes one per loaded artifact, ``Task(artifact)``, where
    ``artifact`` (a :class:`modkit.runtime.Runtime`) offers ``.task`` (the manifest's task
    record: what ``describe()`` returned), ``.tokenizer``, ``.manifest``, ``.folder``,
    ``.max_positions`` (None without learned positions), ``.session(file)`` (the onnxruntime
    session of one of the artifact's ONNX files, opened once) and ``.has_graph(file)``.
    """

    #: fields an input record must have; ``modkit run --text T`` gives ``{"text": T}``
    input_fields: ClassVar[tuple[str, ...]] = ("text",)
    #: the artifact's ONNX files this task runs; the runtime opens them when it loads
    graphs: ClassVar[tuple[str, ...]] = ("model.onnx",)

    def __init__(self, artifact: Any):
        self.artifact = artifact

    def check(self, record: dict[str, Any]) -> str | None:
        """What is wrong with one input record, or None; by default, a missing input field."""
        missing = [f for f in self.input_fields if f not in record]
        return f"missing field {missing[0]!r}" if missing else None

    def run(self, records: list[dict[str, Any]], options: Options) -> list[dict[str, Any]]:
        """One JSON-ready result per record (``modkit run --json`` prints them as they are).
        ``options`` is the task's registered options model, validated."""
        raise NotImplementedError

    def format(self, result: dict[str, Any]) -> str:
        """One result as a line of text for ``modkit run`` without ``--json``."""
        return json.dumps(result, ensure_ascii=False)

    def score(self, records: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, float]:
        """Figures against gold fields of the records (``label``, ``target``...), or {} when
        the records carry none; ``modkit run --file`` reports them."""
        return {}


__all__ = ["Tokenizer", "Backbone", "Objective", "PeftMethod", "Task"]
