"""The `jsonl` source: JSON-lines files, one object per line."""
from __future__ import annotations

import json
from typing import ClassVar

import modkit
from modkit.errors import UserError
from modkit.sources import BadRow, DataSource, SourceOptions, open_text


class JsonLinesOptions(SourceOptions):
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".ndjson")


class JsonLines(DataSource):
    form = "jsonl"

    def rows(self, columns=None):
        for path in self.files():
            try:
                with open_text(path) as f:
                    for n, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except ValueError as e:
                            yield f"{path}:{n}", BadRow(f"not valid JSON ({e})")
                            continue
                        yield f"{path}:{n}", row if isinstance(row, dict) else BadRow(
                            f"a JSON {type(row).__name__}, not an object")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None


@modkit.hookimpl
def modkit_register_data_sources(register):
    register("jsonl", "modkit_plugins.sources.jsonl:JsonLines", options=JsonLinesOptions,
             doc="JSON-lines files (one object per line), compressed or not.")
