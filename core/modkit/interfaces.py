"""The interfaces a plugin implements: Tokenizer, Backbone, Objective (its parts are in
:mod:`modkit.objectives`), PeftMethod, CheckpointFormat.

This module imports no torch, so the registry and the runtime can use it; the torch types in
signatures are annotations only.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Protocol, Sequence, runtime_checkable

from modkit.fileio import atomic_write_text
from modkit.manifest import TaskRecord
from modkit.objectives import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch
    from modkit.nn.outputs import ModelOutput
    from modkit.options import Options
    from modkit.tokenization import Encoding, Template

    KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (batch, heads, time, head_dim)
    #: one entry per layer: (self-attention keys/values, cross-attention keys/values or None)
    Cache = list[tuple[KV, "KV | None"]]


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

    def encode_words(self, words: Sequence[str], *, add_special_tokens: bool = True,
                     max_length: int | None = None) -> tuple[Encoding, list[int | None]]:
        """Pre-split words as one text, and each token's word index (None for special
        tokens); see :func:`modkit.tokenization.encode_words`. Needs ``encode_with_offsets``."""
        from modkit.tokenization import encode_words

        return encode_words(self, words, add_special_tokens=add_special_tokens, max_length=max_length)

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


#: the inputs beyond ``input_ids`` and ``attention_mask`` a backbone's ``forward`` may take
OPTIONAL_INPUTS = frozenset({"position_ids", "token_type_ids", "inputs_embeds"})
#: the special-token roles a decoder may start from
START_ROLES = frozenset({"bos", "eos", "pad", "cls", "sep"})


@dataclass(frozen=True)
class BackboneCapabilities:
    """What a backbone can do, declared in one place (``Backbone.capabilities``) so that the core
    never guesses it from option names or ``forward``'s signature.

    The default (every field unset) is what the core assumes of a backbone that declares
    nothing: no known position limit, ``forward(input_ids, attention_mask)`` only, no input-side
    PEFT (prompt tuning), and blocks FSDP and activation checkpointing cannot find.
    ``modkit.testing.check_backbone`` checks a declaration against the backbone.
    """

    #: the longest sequence ``forward`` accepts (learned positions); None: no limit (T5's
    #: relative positions). The build checks ``seq_len`` plus the positions PEFT methods
    #: reserve against it, and serving truncates inputs to it.
    max_positions: int | None = None
    #: which of :data:`OPTIONAL_INPUTS` ``forward`` takes (an encoder-decoder: its encoder side)
    inputs: frozenset[str] = frozenset()
    #: attribute name of the token-embedding module (an ``nn.Embedding`` of ``vocab_size`` rows):
    #: what ``get_input_embeddings`` is in transformers. ``inputs_embeds`` replace
    #: ``embed_tokens(input_ids)`` (see :meth:`Backbone.embed_tokens`).
    token_embedding: str | None = None
    #: an encoder-decoder's first decoder input, as the tokenizer's special-token role (BART
    #: starts from the eos, T5 from the pad); the build fills ``decoder_start_token_id`` from it
    decoder_start: str | None = None
    #: ids past the tokenizer's vocabulary the family reserves (T5's sentinels ``<extra_id_N>``);
    #: the build adds them to ``vocab_size`` when the tokenizer lacks them
    extra_ids: int = 0
    #: the module class of one layer: the unit FSDP shards and activation checkpointing wraps
    block: type | None = None

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - OPTIONAL_INPUTS
        if unknown:
            raise ValueError(f"BackboneCapabilities.inputs: unknown {sorted(unknown)}; expected some of "
                             f"{sorted(OPTIONAL_INPUTS)}")
        if self.decoder_start is not None and self.decoder_start not in START_ROLES:
            raise ValueError(f"BackboneCapabilities.decoder_start: {self.decoder_start!r} is not a role "
                             f"({', '.join(sorted(START_ROLES))})")
        if "inputs_embeds" in self.inputs and not self.token_embedding:
            raise ValueError("BackboneCapabilities: inputs_embeds needs token_embedding (the module they replace)")
        object.__setattr__(self, "inputs", frozenset(self.inputs))

    def takes(self, name: str) -> bool:
        """Whether ``forward`` takes the optional input ``name``."""
        return name in self.inputs


class Backbone:
    """A torch.nn.Module mapping ids to hidden states; concrete backbones subclass both.

    ``forward(input_ids, attention_mask=None, *, output_hidden_states=False,
    output_attentions=False, past_key_values=None, use_cache=False, **family_inputs)``
    returns a :class:`modkit.nn.outputs.ModelOutput` with ``last_hidden_state`` and, on
    request, ``hidden_states``, ``attentions`` and ``past_key_values``. Projections built
    from :mod:`modkit.nn.blocks` carry role names (``attn.q``...), which PEFT methods target.
    What else the core may rely on (position limit, optional inputs such as
    ``inputs_embeds``, token embedding, decoder start, block class) the backbone declares in
    :meth:`capabilities`.
    """

    config: Options
    d_model: int
    vocab_size: int
    is_decoder: ClassVar[bool] = False  # causal: can generate token by token
    is_encoder_decoder: ClassVar[bool] = False

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from hidden states (usually the tied input embedding)."""
        raise NotImplementedError(f"{type(self).__name__} has no language-model head")

    @classmethod
    def capabilities(cls, options: Options) -> BackboneCapabilities:
        """What this backbone built with ``options`` can do (see :class:`BackboneCapabilities`).
        Read from the options alone: the build asks before the backbone exists. The default
        declares nothing."""
        return BackboneCapabilities()

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What ``forward(inputs_embeds=...)`` replaces: the token embeddings of ``input_ids``,
        before positions are added (a family that scales its embeddings, as BART may, scales
        them here too). By default the declared ``token_embedding`` module's output."""
        name = capabilities_of(self).token_embedding
        if name is None:
            raise NotImplementedError(f"{type(self).__name__} declares no token_embedding")
        return getattr(self, name)(input_ids)


def capabilities_of(backbone: Any) -> BackboneCapabilities:
    """A built backbone's declared capabilities; the default record for a module that is no
    :class:`Backbone`."""
    declare = getattr(type(backbone), "capabilities", None)
    return declare(backbone.config) if declare is not None else BackboneCapabilities()


@runtime_checkable
class CachedDecoder(Protocol):
    """What a decoder-only backbone offers for cached generation and the cached step graph
    (``model_with_past.onnx``, written for the ``generate`` task). Any layers may implement it;
    the core's :class:`modkit.nn.blocks.Block` stacks do.

    ``forward(input_ids, attention_mask, *, past_key_values, use_cache)``:

    - ``input_ids`` (B, T) are the new tokens; ``attention_mask`` (B, P + T), 1 for real tokens,
      covers the P cached positions and the T new ones (or is None: all real);
    - ``past_key_values`` is None or the cache a previous call returned: a list with one entry
      per layer, ``((keys, values), None)``, keys and values (B, heads, P, head_dim); the
      ``None`` is the cross-attention slot, which a decoder-only backbone leaves empty;
    - the new tokens take positions P .. P + T - 1; token t attends to every real cached
      position and to the new positions up to t (causal);
    - with ``use_cache=True`` the output's ``past_key_values`` is the cache over all P + T
      positions in the same layout, so a full pass and a pass split into cached steps give
      the same ``last_hidden_state`` (``modkit.testing.check_backbone`` checks it).

    ``lm_logits(hidden)``: (..., D) -> (..., V) vocabulary logits.
    """

    is_decoder: bool

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                past_key_values: Cache | None = None, use_cache: bool = False) -> ModelOutput: ...

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class EncoderDecoder(Protocol):
    """What an encoder-decoder backbone offers for seq2seq training, generation and the
    ``encoder.onnx`` + ``decoder.onnx`` pair (``is_encoder_decoder = True``).

    - ``encode(input_ids, attention_mask)`` -> the encoder's last hidden state (B, S, D);
    - ``cross_kv(encoder_hidden)`` -> every decoder layer's cross-attention ``(keys, values)``
      (B, heads, S, head_dim) of that encoder output: the encoder graph returns them, so the
      decoder graph never recomputes them;
    - ``decode_step(decoder_input_ids, encoder_hidden, attention_mask, past, use_cache=True)``
      -> ``(logits (B, V) of the last new position, cache)``; ``attention_mask`` is the
      *source* mask (B, S); ``past`` is None on the first step (cross keys/values are then
      computed from ``encoder_hidden``) or the previous cache, one ``((self keys, self
      values), (cross keys, cross values))`` per decoder layer; with a past,
      ``encoder_hidden`` may be None;
    - ``forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)`` ->
      a ModelOutput with ``logits`` (B, T, V) (teacher forcing); without
      ``decoder_input_ids`` the decoder reads ``input_ids`` shifted right;
    - ``generate(input_ids, attention_mask, *, max_new_tokens, ...)`` (subclass
      :class:`modkit.nn.generation.Seq2SeqGenerationMixin` for it) and ``config`` with
      ``decoder_start_token_id``, ``eos_token_id`` and ``pad_token_id``.
    """

    is_encoder_decoder: bool

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor: ...

    def cross_kv(self, encoder_hidden: torch.Tensor) -> list[KV]: ...

    def decode_step(self, decoder_input_ids: torch.Tensor, encoder_hidden: torch.Tensor | None,
                    attention_mask: torch.Tensor | None = None, past: Cache | None = None,
                    use_cache: bool = True) -> tuple[torch.Tensor, Cache]: ...

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PeftWrapper(Protocol):
    """A module a PEFT method puts in place of a role-carrying layer (LoRA's ``LoRALinear``).

    It keeps the role (``modkit_role``, so other methods and :func:`modkit.nn.blocks.iter_roles`
    still find the layer, once) and exposes the layer it wraps as ``.base`` (so methods stack:
    LoRA follows ``.base`` to the ``nn.Linear``). A mergeable wrapper's ``merge()`` folds its
    update into ``base``'s weights (its forward then is ``base``'s) and ``unmerge()`` restores
    them bit for bit.
    """

    modkit_role: str
    base: Any

    def merge(self) -> None: ...

    def unmerge(self) -> None: ...


class PeftMethod:
    """A parameter-efficient fine-tuning method attached to a model in place."""

    #: a freshly applied method leaves the model's outputs unchanged (LoRA's zero B); prefix
    #: tuning, whose trained keys change attention from the start, says False
    identity_at_init: ClassVar[bool] = True
    #: ``merge`` folds the method into the base weights and leaves no module of it behind
    #: (LoRA); False for methods that stay in the exported graph (adapters, prefixes)
    merges: ClassVar[bool] = True
    #: the build's tokenizer, set before ``apply`` (a method may start from a text's token
    #: embeddings, as prompt tuning's ``init = "text"``); None where there is none
    tokenizer: Tokenizer | None = None

    def __init__(self, options: Options):
        self.options = options

    def apply(self, backbone: torch.nn.Module) -> list[torch.nn.Module]:
        """Insert this method's modules into ``backbone`` (the stage's backbone, not the whole
        model: task heads are not targets) and return the ones holding its own trainable
        weights, never the frozen layers they wrap. ``modkit build`` calls it when the stage
        starts, after seeding, then trains only these modules and the task head."""
        raise NotImplementedError

    def target_patterns(self) -> dict[str, list[str]]:
        """The role patterns the user gave this method, by option name (``{"targets":
        ["attn.q", "attn.v"]}``). Before any training, the build checks that every entry
        matches at least one role of the backbone, so a typo is a spec error naming it, not a
        layer silently left out. Default: the ``targets`` option, where the method has one."""
        targets = getattr(self.options, "targets", None)
        return {"targets": list(targets)} if targets else {}

    def merge(self, model: torch.nn.Module) -> None:
        """Fold the method into the base weights and remove its modules, where it can
        (``merges``); otherwise leave them in place, computing what they did (adapters stay,
        prefixes freeze to constants). ``modkit build`` calls it with the backbone when a
        later stage starts (a stage trains on top of the earlier stages' merged methods) and
        before the export, then records the method as merged."""

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: torch.nn.Module):
        """Attach an adapter folder (Hugging Face PEFT's or AdapterHub's: ``adapter_config.json``
        as ``config``, its safetensors as ``weights``) to ``model``; return ``(method,
        modules)`` as ``apply`` would, or None when the folder is not this method's (PEFT's
        ``config["peft_type"]``, AdapterHub's ``config["config"]``)."""
        return None

    @classmethod
    def to_hf_peft(cls, model: torch.nn.Module, hf_weights: dict, hf_config: dict):
        """This method's modules on ``model`` as a Hugging Face PEFT adapter: ``(config,
        weights)`` named after ``hf_weights`` (the base checkpoint ``export-hf`` writes, whose
        ``config.json`` is ``hf_config``), or None when the model has none. Raise UserError if
        peft cannot express them."""
        return None


class Task:
    """How ``modkit run`` and ``modkit serve`` serve one task, without torch (numpy + onnxruntime).

    Registered through ``modkit_register_tasks`` under the name an objective's task record
    gives as ``task``. The runtime makes one per loaded artifact, ``Task(artifact)``, where
    ``artifact`` (a :class:`modkit.runtime.Runtime`) offers ``.task`` (the manifest's task
    record, a :class:`modkit.manifest.TaskRecord`: what the objective's ``task_record`` gave;
    ``task["key"]`` and ``task.get("key")`` read it as a dict), ``.tokenizer``, ``.manifest`` (the
    :class:`modkit.manifest.Manifest`), ``.folder``, ``.max_positions`` (how many positions
    input tokens may take; None: no limit), ``.session(file)`` (the onnxruntime session of one
    of the artifact's ONNX files, opened once) and ``.has_graph(file)``.
    """

    #: fields an input record must have; ``modkit run --text T`` gives ``{"text": T}``
    input_fields: ClassVar[tuple[str, ...]] = ("text",)
    #: further fields a record may carry (gold fields that ``score`` reads); ``modkit serve``
    #: refuses any other field
    optional_fields: ClassVar[tuple[str, ...]] = ()
    #: the artifact's ONNX files this task runs; the runtime opens them when it loads
    graphs: ClassVar[tuple[str, ...]] = ("model.onnx",)
    #: the model of this task's record (a :class:`~modkit.manifest.TaskRecord` subclass that
    #: types the fields ``run`` reads): the runtime reads the manifest's record through it when
    #: it loads, so a record without them fails there, naming the field; the build checks its
    #: objective's record against it before writing the artifact
    record: ClassVar[type[TaskRecord]] = TaskRecord

    def __init__(self, artifact: Any):
        self.artifact = artifact

    def check(self, record: dict[str, Any]) -> str | None:
        """What is wrong with one input record, or None; by default, a missing input field."""
        missing = [f for f in self.input_fields if f not in record]
        return f"missing field {missing[0]!r}" if missing else None

    def size(self, record: dict[str, Any]) -> int:
        """A record's length, to sort by: the runtime batches records of like size together."""
        return len(str(record.get("text", "")))

    def run(self, records: list[dict[str, Any]], options: Options) -> list[dict[str, Any]]:
        """One JSON-ready result per record (``modkit run --json`` prints them as they are), all
        in one batch where the graphs allow (the runtime has already cut the input into batches).
        ``options`` is the task's registered options model, validated."""
        raise NotImplementedError

    def format(self, result: dict[str, Any]) -> str:
        """One result as a line of text for ``modkit run`` without ``--json``."""
        return json.dumps(result, ensure_ascii=False)

    def score(self, records: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, float]:
        """Figures against gold fields of the records (``label``, ``target``...), or {} when
        the records carry none; ``modkit run --file`` reports them."""
        return {}


__all__ = ["Tokenizer", "Backbone", "BackboneCapabilities", "capabilities_of", "CachedDecoder", "EncoderDecoder",
           "Objective", "ObjectiveReader", "ObjectiveHead", "ObjectiveExport", "PeftMethod", "PeftWrapper", "Task", "CheckpointFormat"]


class CheckpointFormat:
    """How one Hugging Face ``model_type`` maps to a modkit model, registered with
    ``modkit_register_checkpoint_formats``. Most formats name their weights in a
    :class:`modkit.builder.hf.weight_table.WeightTable` read both ways and write only the
    options <-> config.json mapping by hand.
    """

    def from_hf(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The model for a checkpoint, with its task head when the weights have one. A weight
        name the format does not recognise is an :class:`~modkit.ArtifactError` naming it."""
        raise NotImplementedError

    def to_hf(self, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(config.json, weights)`` that transformers loads as the same model."""
        raise NotImplementedError

    def handles(self, model: torch.nn.Module) -> bool:
        """Whether :meth:`to_hf` can write ``model``."""
        raise NotImplementedError

    def with_head(self, backbone: torch.nn.Module, head: dict[str, Any]) -> torch.nn.Module | None:
        """The backbone with a task head that transformers has a class for (``head`` as
        :meth:`modkit.objectives.ObjectiveExport.hf_head` describes it), or None where it has none."""
        return None
