"""The build (torch): `build` runs a spec's stages after `preflight` checks it; `training/`, `export/`,
`hf/` (Hugging Face conversion) and `telemetry/` hold the parts; `peft_plan` and `merge` the PEFT
methods a build attaches and folds in.

The base install serves artifacts without torch; everything under this package needs the
``train`` extra, so importing it without one is a user's error that says what to install.
"""
from importlib.util import find_spec

from modkit.errors import MissingExtraError


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_missing = [name for name in ("torch", "onnx") if not _importable(name)]
if _missing:
    raise MissingExtraError(
        f"this needs {' and '.join(_missing)}, which this install of modkit lacks (its base install only "
        "serves artifacts); building and reading torch models need: pip install 'modkit[train]'")
