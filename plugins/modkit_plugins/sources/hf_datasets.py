"""The `datasets` source: a folder saved by Hugging Face `datasets` (``save_to_disk``)."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

import modkit
from modkit.errors import MissingExtraError, UserError
from modkit.sources import DataSource, SourceOptions

#: files `save_to_disk` writes into a Dataset's or a DatasetDict's folder
MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class DatasetsOptions(SourceOptions):
    split: str | None = Field(None, description="The split of a DatasetDict folder (default: 'train', or its only split).")
    batch_rows: int = Field(1024, gt=0, description="Rows read at a time.")

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir() and any((path / m).exists() for m in MARKERS)


class SavedDataset(DataSource):
    """Rows of the saved dataset (memory-mapped Arrow: read a batch at a time)."""

    def rows(self, columns=None):
        try:
            import datasets
        except ImportError:
            raise MissingExtraError("the datasets source needs Hugging Face datasets: "
                                    "pip install 'modkit[datasets]'") from None
        path = self.base / self.options.path if isinstance(self.options.path, str) else None
        if path is None or not path.is_dir():
            raise UserError(f"{self.options.path}: the datasets source reads one folder saved by save_to_disk")
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as e:
            raise UserError(f"{path}: not a folder saved by datasets' save_to_disk ({e})") from None
        ds = self._split(loaded, path)
        if columns is not None:
            ds = ds.select_columns([c for c in columns if c in ds.column_names])
        n = 0
        for batch in ds.iter(batch_size=self.options.batch_rows):
            names = list(batch)
            for values in zip(*(batch[k] for k in names)):
                n += 1
                yield f"{path}:row {n}", dict(zip(names, values))

    def _split(self, loaded, path: Path):
        split = self.options.split
        if not hasattr(loaded, "keys"):  # a single Dataset
            if split is not None:
                raise UserError(f"{path}: a single dataset with no splits; remove split = {split!r}")
            return loaded
        names = list(loaded.keys())
        split = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if split not in names:
            raise UserError(f"{path}: " + (f"no split {split!r}" if split else "several splits") +
                            f"; choose one with split = one of {names}")
        return loaded[split]


@modkit.hookimpl
def modkit_register_data_sources(register):
    register("datasets", "modkit_plugins.sources.hf_datasets:SavedDataset", options=DatasetsOptions,
             doc="A Hugging Face datasets folder (save_to_disk), one split of it.")
