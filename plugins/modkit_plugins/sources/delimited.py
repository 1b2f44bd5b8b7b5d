"""The `csv` and `tsv` sources: delimited files with a header row."""
from __future__ import annotations

import csv
from typing import ClassVar

from pydantic import Field

import modkit
from modkit.errors import UserError
from modkit.sources import BadRow, DataSource, SourceOptions, open_text


class CsvOptions(SourceOptions):
    delimiter: str = Field(",", min_length=1, max_length=1, description="The column separator.")
    suffixes: ClassVar[tuple[str, ...]] = (".csv",)


class TsvOptions(CsvOptions):
    delimiter: str = Field("\t", min_length=1, max_length=1, description="The column separator.")
    suffixes: ClassVar[tuple[str, ...]] = (".tsv", ".tab")


class Delimited(DataSource):
    """Rows of the files' header's columns; every value is a string. A row with more or fewer
    columns than the header is a bad row."""

    def rows(self, columns=None):
        for path in self.files():
            try:
                with open_text(path) as f:
                    reader = csv.reader(f, delimiter=self.options.delimiter)
                    header = next(reader, None)
                    while True:
                        try:
                            values = next(reader)
                        except StopIteration:
                            break
                        except csv.Error as e:
                            yield f"{path}:{reader.line_num}", BadRow(f"not valid CSV ({e})")
                            continue
                        if not values:
                            continue  # a blank line
                        where = f"{path}:{reader.line_num}"
                        yield where, dict(zip(header, values)) if len(values) == len(header) else BadRow(
                            f"{len(values)} columns, the header has {len(header)}")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None


@modkit.hookimpl
def modkit_register_data_sources(register):
    register("csv", "modkit_plugins.sources.delimited:Delimited", options=CsvOptions,
             doc="CSV files with a header row (values are strings), compressed or not.")
    register("tsv", "modkit_plugins.sources.delimited:Delimited", options=TsvOptions,
             doc="Tab-separated files with a header row, compressed or not.")
