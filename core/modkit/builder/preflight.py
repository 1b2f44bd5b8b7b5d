"""What a build checks before any work: everything that needs only the spec, its files and the
backbone's shape.

The backbone is built on the meta device (shapes only: no memory, no initialisation), each
stage's objective is attached to it as the build will attach it, and each stage's data is read
by it. So an empty or malformed data file of the last stage is reported at once, not after the
earlier stages have trained. (The PEFT plan and the objective/backbone pairs are checked by
``build.check_peft_plan`` and ``build.check_stages`` just before.)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import torch

from modkit.errors import UserError
from modkit.nn.model import ModkitModel
from modkit.registry import Component


def preflight(spec, tokenizer, backbone: Component, options: Any) -> None:
    """Raise :class:`UserError` naming the spec key of the first problem found."""
    with _at(spec, "backbone"):
        model = _on_meta(lambda: ModkitModel(backbone.load()(options)))
    if model is None:
        return  # a backbone that cannot be built on the meta device is checked when the build makes it
    for i, stage in enumerate(spec.model.stages):
        for res in spec.objectives[i]:  # a stage's objectives all read its data
            with _at(spec, f"stages[{i}].objective"):
                objective = _on_meta(lambda: model.add_objective(
                    res.component.name, res.component.load()(res.options, model.backbone, tokenizer)))
            if objective is not None:
                with _at(spec, f"stages[{i}].data"):  # off the meta device: objectives may look at the values
                    objective.load_data(spec.path(stage.data), stage.seq_len)


def _on_meta(make: Callable[[], Any]) -> Any:
    """``make()`` on the meta device; None when a plugin's code cannot run there (it reads
    values, say): that part is then checked when the build reaches it, as before."""
    try:
        with torch.device("meta"):
            return make()
    except UserError:
        raise
    except Exception:
        return None


@contextmanager
def _at(spec, key: str):
    """Name the spec file and key path in a UserError raised inside."""
    try:
        yield
    except UserError as e:
        raise UserError(f"{spec.source}: {key}: {e}") from None
