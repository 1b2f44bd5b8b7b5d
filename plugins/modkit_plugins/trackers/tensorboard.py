"""The `tensorboard` tracker: event files TensorBoard (and its EventAccumulator) reads."""
from __future__ import annotations

from pydantic import Field

import modkit


class TensorBoardOptions(modkit.Options):
    log_dir: str = Field("runs", description="Folder of runs, relative to the spec's folder (`tensorboard --logdir runs`).")
    run_name: str | None = Field(None, description="The run's subfolder; default NAME-YYYYmmdd-HHMMSS (UTC).")


@modkit.hookimpl
def modkit_register_trackers(register):
    register("tensorboard", "modkit_plugins.trackers.tensorboard_impl:TensorBoard", options=TensorBoardOptions,
             doc="TensorBoard event files: every metrics.jsonl figure as a scalar, the spec as text and hparams.")
