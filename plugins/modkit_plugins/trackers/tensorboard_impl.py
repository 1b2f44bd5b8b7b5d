"""TensorBoard event files through torch's SummaryWriter (the tensorboard package's format)."""
from __future__ import annotations

import json
import time

from torch.utils.tensorboard import SummaryWriter

from modkit.tracking import Tracker


class TensorBoard(Tracker):
    def start(self, params, spec):
        run = self.options.run_name or f"{self.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        self.folder = (self.base / self.options.log_dir / run).resolve()
        self.writer = SummaryWriter(str(self.folder))
        self.params = params
        self.writer.add_text("spec", "```\n" + json.dumps(spec, indent=2) + "\n```")  # text is Markdown
        return {"log_dir": str(self.folder)}

    def log(self, metrics, step):
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def finish(self, manifest, artifact):
        if manifest is not None:  # the hparams view: the spec's values beside the final held-back figures
            final = {f"final/{k}": v for k, v in (manifest["stages"][-1].get("eval") or {}).items()
                     if isinstance(v, (int, float))}
            if "parity" in manifest:
                final["final/parity_max_abs_diff"] = manifest["parity"]["max_abs_diff"]
            self.writer.add_hparams(self.params, final or {"final/steps": manifest["stages"][-1]["steps"]}, run_name=".")
        self.writer.close()
