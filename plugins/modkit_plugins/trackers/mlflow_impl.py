"""An MLflow run through MlflowClient (no global active run: a build inside a user's own run
leaves theirs alone)."""
from __future__ import annotations

import os
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from modkit.tracking import Tracker

PARAM_LIMIT = 6000  # MLflow's longest parameter value
BATCH = 100  # MLflow's most parameters per log_batch


class MLflow(Tracker):
    def start(self, params, spec):
        o = self.options
        uri, artifacts = o.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), None
        if uri is None:  # a local store; MLflow's plain-folder store is frozen, its SQLite one is not
            store = (self.base / "mlruns").resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        name = o.experiment or self.name
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name, artifact_location=artifacts)
        self.run_id = self.client.create_run(experiment, run_name=o.run_name or self.name,
                                             tags={"modkit.spec_name": self.name}).info.run_id
        items = [Param(k, v[:PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i: i + BATCH])
        return {"tracking_uri": uri, "experiment_id": experiment, "run_id": self.run_id}

    def log(self, metrics, step):
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, manifest, artifact):
        if artifact is not None and self.options.log_artifact:
            self.client.log_artifacts(self.run_id, str(artifact), "artifact")
        self.client.set_terminated(self.run_id, "FINISHED" if artifact is not None else "FAILED")
