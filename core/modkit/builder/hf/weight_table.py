"""One family's weight names, modkit <-> Hugging Face, as data read in both directions.

A checkpoint format lists :class:`Row` s: a modkit parameter name and the name transformers
gives it, where ``{i}`` (or any ``{name}``) stands for a layer index. :meth:`WeightTable.from_hf`
renames a checkpoint's tensors, :meth:`WeightTable.to_hf` renames a model's state back; a row
may transpose (transformers' ``Conv1D``), fuse several of ours into one of theirs (GPT-2's
``c_attn``), or accept other names of a tied tensor on the way in. A checkpoint tensor that no
row takes is an error naming it, so nothing is dropped silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from modkit.errors import ArtifactError

_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Row:
    """``ours`` (one name, or several fused into ``theirs`` along ``dim`` of their layout)."""

    ours: str | tuple[str, ...]
    theirs: str
    transpose: bool = False
    dim: int = 0
    aliases: tuple[str, ...] = ()  # other names of the same (tied) tensor, read but never written

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.ours,) if isinstance(self.ours, str) else self.ours


def _pattern(template: str) -> re.Pattern:
    """``blocks.{i}.attn.q.weight`` -> a regex capturing ``i``."""
    out, last = [], 0
    for m in _FIELD.finditer(template):
        out += [re.escape(template[last:m.start()]), rf"(?P<{m.group(1)}>\d+)"]
        last = m.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out) + r"\Z")


class WeightTable:
    def __init__(self, rows: Iterable[Row], *, ignore: Iterable[str] = (), source: str = "checkpoint"):
        self.rows = list(rows)
        self.source = source
        self._ignore = [re.compile(p) for p in ignore]
        self._theirs = [(_pattern(name), row) for row in self.rows for name in (row.theirs, *row.aliases)]
        self._ours = [(_pattern(row.parts[0]), row) for row in self.rows]

    def from_hf(self, weights: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
        """A checkpoint's tensors under modkit's names (``prefix``, the base model's name in a
        headed checkpoint, is optional on each). Names that no row or ``ignore`` pattern takes
        are an :class:`ArtifactError` naming them as the file does; a tensor read under two
        names keeps the first."""
        state: dict[str, Any] = {}
        unknown = []
        for name, tensor in weights.items():
            bare = name.removeprefix(prefix)
            hit = next(((m, row) for p, row in self._theirs if (m := p.match(bare))), None)
            if hit is None:
                if not any(p.search(bare) for p in self._ignore):
                    unknown.append(name)
                continue
            m, row = hit
            parts = [p.format(**m.groupdict()) for p in row.parts]
            pieces = tensor.chunk(len(parts), dim=row.dim) if len(parts) > 1 else (tensor,)
            for ours, piece in zip(parts, pieces):
                state.setdefault(ours, piece.T if row.transpose else piece)
        if unknown:
            raise ArtifactError(f"{self.source}: {len(unknown)} weight name(s) not recognised: "
                                f"{', '.join(sorted(unknown))}")
        return {k: v.contiguous() for k, v in state.items()}

    def to_hf(self, state: Mapping[str, Any], *, prefix: str = "", keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """A model's state under transformers' names, each behind ``prefix`` except those
        starting with one of ``keep`` (transformers keeps task heads outside the base model).
        Parameters no row names are left out: the format writes those itself, or they have no
        counterpart."""
        import torch

        weights: dict[str, Any] = {}
        for name in state:
            hit = next(((m, row) for p, row in self._ours if (m := p.match(name))), None)
            if hit is None:
                continue
            m, row = hit
            fields = m.groupdict()
            pieces = [state[p.format(**fields)] for p in row.parts]
            pieces = [t.T if row.transpose else t for t in pieces]
            tensor = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=row.dim)
            theirs = row.theirs.format(**fields)
            theirs = theirs if keep and theirs.startswith(keep) else prefix + theirs
            weights[theirs] = tensor.detach().contiguous()
        return weights

