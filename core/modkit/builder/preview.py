"""`modkit preview`: the training examples a stage's objectives draw, exactly as the build
draws them (the same seeded generator per step), one record per example."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from modkit.builder.assembly import attach_stage, stage_backbone, stage_tokenizer
from modkit.builder.training.engine import step_seed
from modkit.errors import UserError
from modkit.nn.model import ModkitModel
from modkit.registry import Registry, get_registry
from modkit.spec import load_spec

IGNORE = -100
#: id fields decoded to text in each record: field -> the text's key
TEXTS = {"original_ids": "original_text", "input_ids": "input_text", "labels": "labels_text",
         "decoder_input_ids": "decoder_input_text", "choice_ids": "choice_texts"}


def preview(spec_path: str | Path, *, stage: int = 0, n: int = 10, overrides: list[str] = (),
            registry: Registry | None = None, texts: bool = True,
            echo: Callable[[str], None] = lambda msg: None) -> Iterator[dict[str, Any]]:
    """Yield ``n`` training examples of each objective of ``stages[stage]``: the fields of its
    batches (``original_ids``, ``input_ids``, ``labels`` with -100 where ignored, and where the
    objective has them ``token_type_ids``, ``decoder_input_ids``, ``next_sentence_label``...),
    padding removed, with the decoded texts when ``texts``."""
    registry = registry or get_registry()
    spec = load_spec(spec_path, list(overrides), registry=registry)
    if not 0 <= stage < len(spec.model.stages):
        raise UserError(f"{spec.shown}: no stages[{stage}]; the spec has {len(spec.model.stages)} stage(s)")
    with tempfile.TemporaryDirectory() as work:
        tokenizer, _ = stage_tokenizer(spec, Path(work), echo, registry)
    model = ModkitModel(stage_backbone(spec, tokenizer, registry)[0])
    for i in range(stage + 1):  # earlier stages' objectives too: their modules are part of the model
        objs, _, _ = attach_stage(model, [(r.component, r.options) for r in spec.objectives[i]],
                                   [(r.component, r.options) for r in spec.peft[i]], tokenizer,
                                   spec.model.seed, i)
    settings = spec.model.stages[stage]
    parts = [(r.component.name, obj, obj.reader.load_data(spec.data_file(stage, obj).path, settings.seq_len))
             for r, obj in zip(spec.objectives[stage], objs)]
    yield from _records(parts, settings.batch_size, spec.model.seed, stage, n, tokenizer if texts else None)


def _records(parts, batch_size: int, seed: int, stage: int, n: int, tokenizer) -> Iterator[dict[str, Any]]:
    """``n`` examples of each (name, objective, data), step by step: every objective of the
    stage draws its batch from the step's generator in turn, as the training loop does."""
    done = dict.fromkeys([name for name, _, _ in parts], 0)
    step = 0
    while min(done.values()) < n:
        generator = torch.Generator().manual_seed(step_seed(seed, stage, step))
        for name, obj, data in parts:
            for row in _rows(obj.reader.batch(data, batch_size, generator)):
                if done[name] == n:
                    break
                row = {"objective": name, "step": step, **row}
                if tokenizer is not None:  # an objective with ids of its own (T5's sentinels) decodes them
                    decode = getattr(obj.reader, "decode", tokenizer.decode)
                    for field, key in TEXTS.items():
                        if isinstance(row.get(field), list):  # a class label is one number: no text
                            row[key] = _decode(decode, row[field])
                    names = getattr(obj.reader, "label_names", None)  # labels that are classes, not token ids (tags)
                    if names is not None and isinstance(row.get("labels"), list):
                        row["labels_text"] = " ".join(names[t] for t in row["labels"] if t != IGNORE)
                done[name] += 1
                yield row
        step += 1


def _decode(decode, ids: list) -> str | list:
    """The text of ids, or a list of texts for a group of rows (one per choice)."""
    if ids and isinstance(ids[0], list):
        return [_decode(decode, row) for row in ids]
    return decode([t for t in ids if t != IGNORE])


def _rows(batch: dict[str, torch.Tensor]) -> Iterator[dict[str, Any]]:
    """Per-example lists with padding cut: each field by the mask of its sequence
    (``decoder_*`` and seq2seq ``labels`` by ``decoder_attention_mask``, ``pair_*`` by
    ``pair_attention_mask``, ``original_*`` by ``original_attention_mask`` where the objective
    gives one, the rest by ``attention_mask`` when it has that width)."""
    batch = dict(batch)
    batch.setdefault("original_ids", batch["input_ids"])  # nothing corrupted
    masks = {k[: -len("attention_mask")]: v for k, v in batch.items() if k.endswith("attention_mask")}

    def mask_of(key: str) -> list | None:
        prefix = "decoder_" if key == "labels" and "decoder_" in masks else \
            max((p for p in masks if p and key.startswith(p)), key=len, default="")
        mask = masks.get(prefix)
        if mask is None or mask.shape != batch[key].shape:
            return None  # no mask of its shape: nothing to cut
        return mask.sum(-1).tolist()

    def cut(values, lengths):  # a row by its length, or each row of a (K, T) group by its own
        if lengths is None:
            return values
        if isinstance(lengths, list):
            return [cut(v, n) for v, n in zip(values, lengths)]
        return values[:lengths]

    columns = {k: (v.tolist(), mask_of(k) if v.dim() >= 2 else None)
               for k, v in batch.items() if isinstance(v, torch.Tensor) and not k.endswith("attention_mask")}
    for i in range(len(batch["input_ids"])):
        yield {k: cut(values[i], lengths[i] if lengths is not None else None) for k, (values, lengths) in columns.items()}

