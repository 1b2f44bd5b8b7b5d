"""The `parquet` source: Parquet files (pyarrow), read a row group's batch at a time."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

import modkit
from modkit.errors import MissingExtraError, UserError
from modkit.sources import DataSource, SourceOptions


class ParquetOptions(SourceOptions):
    batch_rows: int = Field(1024, gt=0, description="Rows read at a time: what memory holds.")
    suffixes: ClassVar[tuple[str, ...]] = (".parquet", ".pq")


class Parquet(DataSource):
    def rows(self, columns=None):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtraError("the parquet source needs pyarrow: pip install 'modkit[parquet]'") from None
        for path in self.files():
            try:
                # no pre-buffering: pyarrow would keep every row group's column chunks it read
                # until the file is closed (memory growing with the file), not one at a time
                table = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            except Exception as e:  # pyarrow's own error types: not a Parquet file, truncated...
                raise UserError(f"{path}: not a Parquet file ({e})") from None
            names = table.schema_arrow.names
            # only the columns read (those present: a missing one is each row's problem)
            wanted = None if columns is None else [c for c in columns if c in names]
            n = 0
            for batch in table.iter_batches(batch_size=self.options.batch_rows, columns=wanted):
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path}:row {n}", row


@modkit.hookimpl
def modkit_register_data_sources(register):
    register("parquet", "modkit_plugins.sources.parquet:Parquet", options=ParquetOptions,
             doc="Parquet files (pyarrow), streamed a batch of rows at a time.")
