"""The data-source contract (``check_source``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from modkit.sources import BadRow, DataSource


def check_source(source: DataSource, rows: int | None = None) -> None:
    """Assert ``source`` (constructed over a sample of its format) keeps the contract:
    ``files`` lists existing files; ``rows`` streams (an iterator, not a list) ``(where, dict |
    BadRow)`` pairs, ``where`` = ``FILE:ROW`` naming one of the files (or the folder holding it), the same rows on a second read; with
    ``columns`` it still gives those columns; a text source's ``text_chunks`` are strings whose
    non-empty lines are its rows. ``rows``: how many rows the sample holds, if known."""
    files = source.files()
    assert files and all(isinstance(f, Path) and f.is_file() for f in files), f"files() must list existing files: {files}"
    stream = source.rows()
    assert isinstance(stream, Iterator), "rows() must stream (a generator), not build a list of every row"
    first = list(stream)
    assert first, "rows() gave no rows on the sample"
    for pair in first:
        assert isinstance(pair, tuple) and len(pair) == 2, f"rows() must give (where, row) pairs, not {pair!r}"
        where, row = pair
        named = Path(where.rsplit(":", 1)[0]) if isinstance(where, str) else None
        assert named is not None and any(named == f or named in f.parents for f in files), \
            f"where {where!r} must be FILE:ROW, FILE the file (or folder) the row is in"
        assert isinstance(row, (dict, BadRow)), f"a row must be a dict or a BadRow, not {type(row).__name__}"
    assert list(source.rows()) == first, "a second read gave other rows"
    if rows is not None:
        assert len(first) == rows, f"{len(first)} rows, the sample holds {rows}"
    good = [row for _, row in first if isinstance(row, dict)]
    if good and good[0]:
        column = next(iter(good[0]))
        narrowed = [row for _, row in source.rows([column]) if isinstance(row, dict)]
        assert [r.get(column) for r in narrowed] == [r.get(column) for r in good], \
            f"rows([{column!r}]) must still give column {column!r}"
    if source.form == "text":
        chunks = list(source.text_chunks())
        assert all(isinstance(c, str) for c in chunks), "text_chunks() must give strings"
        lines = [line.rstrip("\r") for line in "".join(chunks).split("\n") if line.strip()]
        assert lines == [row["text"] for row in good], "a text source's rows must be its text's non-empty lines"
