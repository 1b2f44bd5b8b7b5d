"""The `text` source: plain text files and globs of them, compressed or not."""
from __future__ import annotations

from typing import ClassVar

import modkit
from modkit.sources import DataSource, SourceOptions, read_chunks


class TextOptions(SourceOptions):
    suffixes: ClassVar[tuple[str, ...]] = (".txt", ".text", ".md")


class Text(DataSource):
    """The files' text, concatenated (each ending with a newline); as records, one per
    non-empty line: ``{"text": line}``."""

    form = "text"

    def text_chunks(self):
        for path in self.files():
            last = ""
            for chunk in read_chunks(path):
                yield chunk
                last = chunk
            if last and not last.endswith("\n"):
                yield "\n"  # the next file starts on a line of its own

    def rows(self, columns=None):
        for path in self.files():
            rest, n = "", 0
            for chunk in read_chunks(path):
                lines = (rest + chunk).split("\n")
                rest = lines.pop()
                for line in lines:
                    n += 1
                    if line.strip():
                        yield f"{path}:{n}", {"text": line.rstrip("\r")}
            if rest.strip():
                yield f"{path}:{n + 1}", {"text": rest.rstrip("\r")}


@modkit.hookimpl
def modkit_register_data_sources(register):
    register("text", "modkit_plugins.sources.text:Text", options=TextOptions,
             doc="Plain text files or globs of them (gzip, bz2, xz, zstd read as they are); records are its lines.")
