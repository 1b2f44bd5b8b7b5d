"""The `mlflow` tracker: a run with the build's metrics, the resolved spec as parameters and
the artifact."""
from __future__ import annotations

from pydantic import Field

import modkit


class MLflowOptions(modkit.Options):
    tracking_uri: str | None = Field(None, description=(
        "Where runs go: a server (http://...), a database (sqlite:///...); default $MLFLOW_TRACKING_URI, "
        "else a local store in mlruns/ beside the spec (mlflow.db and artifacts/)."))
    experiment: str | None = Field(None, description="The experiment's name; default the spec's name.")
    run_name: str | None = Field(None, description="The run's name; default the spec's name.")
    log_artifact: bool = Field(True, description="Upload the artifact folder into the run (under `artifact/`).")


@modkit.hookimpl
def modkit_register_trackers(register):
    register("mlflow", "modkit_plugins.trackers.mlflow_impl:MLflow", options=MLflowOptions,
             doc="An MLflow run: every metrics.jsonl figure, the resolved spec as parameters, the artifact.")
