"""A build's PEFT plan: which methods each stage attaches, from what, and whether they merge
after it.

Three places replay it and must agree: the preflight rehearsal on a meta-device backbone, the
build (a resume included), and :func:`modkit.builder.assembly.assemble_model`, which rebuilds an
artifact's structure from its manifest. They all read the plan here, from the spec
(:meth:`PeftPlan.from_spec`) or from the manifest's ``kept``/``merged`` records
(:meth:`PeftPlan.from_manifest`), and attach through :meth:`PlannedMethod.attach`.

The rule: a stage's methods merge at the boundary after it (LoRA folds away, prefixes freeze,
adapters stay), and the last stage's only with ``[export] merge``. A method whose modules are
still in the model at the end is ``kept``; an artifact holds only kept methods' weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from modkit.errors import UserError
from modkit.manifest import Manifest
from modkit.registry import Component, Registry


@dataclass(frozen=True)
class PlannedMethod:
    """One PEFT method of one stage. ``key`` names it in messages (``stages[1].peft[0]``)."""

    component: Component
    options: Any
    key: str
    merges: bool  # merged after its stage (at the next boundary, or for the export)
    source: Path | None = None  # a Hugging Face PEFT or AdapterHub folder it starts from

    def attach(self, backbone: nn.Module, tokenizer=None) -> tuple[Any, list[nn.Module]]:
        """Apply the method to ``backbone`` (or read it from its folder); (method, its new modules).
        ``tokenizer`` is the build's, which a method may read (prompt tuning's text init)."""
        if self.source is None:
            method = self.component.load()(self.options)
            method.tokenizer = tokenizer
            return method, method.apply(backbone)
        from modkit.builder.hf.peft_folders import read_peft_folder

        config, weights = read_peft_folder(self.source)
        found = self.component.load().from_hf_peft(config, weights, backbone)
        if found is None:
            raise UserError(f"{self.source}: a {config.get('peft_type')!r} adapter, not one "
                            f"{self.component.name!r} reads")
        return found


@dataclass(frozen=True)
class PeftPlan:
    """Per stage, its planned methods in the order they apply."""

    stages: list[list[PlannedMethod]]

    @classmethod
    def from_spec(cls, spec) -> "PeftPlan":
        last = len(spec.peft) - 1
        return cls([[PlannedMethod(res.component, res.options, f"stages[{i}].peft[{j}]",
                                   merges=i < last or spec.model.export.merge, source=_source(spec, i, j))
                     for j, res in enumerate(stage)] for i, stage in enumerate(spec.peft)])

    @classmethod
    def from_manifest(cls, manifest: Manifest, registry: Registry) -> "PeftPlan":
        """The methods an artifact kept, as its build attached them; a method merged away (a
        merged LoRA) left no modules to rebuild. A kept method that merged is merged again, so
        it takes its merged shape (a prefix's constants)."""
        stages = []
        for i, stage in enumerate(manifest.components.stages):
            planned = []
            for j, record in enumerate(stage.peft):
                if record.kept:
                    comp = registry.get("peft", record.name)
                    planned.append(PlannedMethod(comp, comp.options.model_validate(record.options),
                                                 f"stages[{i}].peft[{j}]", merges=record.merged))
            stages.append(planned)
        return cls(stages)


def _source(spec, stage: int, index: int) -> Path | None:
    """The adapter folder a method starts from (``from``: a folder or an ``hf:`` name), if any."""
    source = spec.model.stages[stage].peft[index].option_values().get("from")
    return spec.from_path(source) if source else None
