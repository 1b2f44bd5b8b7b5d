"""Data sources: where a stage's ``data`` comes from, read row by row.

A source is a component (kind ``source``, hook ``modkit_register_data_sources``): plain text
and globs of it, JSONL, CSV/TSV, Parquet, a saved ``datasets`` folder, or a third party's
own. Every file-based source reads compressed files (``.gz``, ``.bz2``, ``.xz``, ``.zst``)
through :func:`open_binary`.

Objectives read one of two forms (:attr:`modkit.objectives.ObjectiveReader.reads`): ``"text"`` (a
text file) or ``"records"`` (a JSON-lines file). :func:`prepare` streams the source's rows
once into that form, in ``$MODKIT_CACHE/data`` under a name holding the sha256 of the
source's files and options, so the token-file cache (which keys on the file it reads) keys on
the source's content, a second build reuses the file, and memory stays flat however large
the source. A field mapping (``fields = { text = "review", label = "stars" }``) gives each
role the objective reads (``text``, ``text_pair``, ``label``, ``source``, ``target``,
``choices``, ``tokens``, ``tags``) its column. A plain text or JSONL file that needs no
conversion is read where it is, as before sources existed.

Torch-free: numpy is not even needed.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import json
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Iterator, Literal

from pydantic import Field

from modkit.errors import MissingExtraError, UserError
from modkit import fileio
from modkit.fileio import atomic_path, data_sha256
from modkit.options import Options

#: compressed-file endings every file-based source reads
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


class SourceOptions(Options):
    """What every source takes; a source's own options model subclasses this one."""

    path: str | list[str] = Field(description="A file, folder or glob (shards/*.txt.gz), or a list of them; "
                                              "relative to the spec's folder (with repo: inside the repository).")
    fields: dict[str, str] = Field(default_factory=dict, description=(
        "Role -> column: which column holds the text, text_pair, label, source, target, choices, tokens "
        "or tags the objective reads, renamed to the role (default: the column of the role's own name)."))
    repo: str | None = Field(None, description=(
        "hf:ORG/NAME[@REVISION]: a dataset repository on the Hugging Face Hub, read through its cache "
        "(HF_HUB_OFFLINE honoured); path is then inside it (e.g. \"data/train-*.parquet\")."))
    on_bad_rows: Literal["error", "skip"] = Field("error", description=(
        "A row that cannot be read (malformed, a mapped column missing): an error naming the file and row, "
        "or skipped and counted in the manifest."))

    #: file name endings (before any compression ending) a plain ``data = "..."`` string with
    #: this source's files is read by it
    suffixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def claims(cls, path: Path) -> bool:
        """Whether a plain ``data = "..."`` naming ``path`` is this source's."""
        return path.is_file() and strip_compression(path.name).endswith(cls.suffixes) if cls.suffixes else False


@dataclass(frozen=True)
class BadRow:
    """A row a source could not read: what :func:`prepare` reports or skips."""

    reason: str


Row = tuple[str, "dict[str, Any] | BadRow"]  # (where: "file:row", the row)


class DataSource:
    """A source of rows. Subclasses implement :meth:`rows`; a text source (``form = "text"``)
    also :meth:`text_chunks`, the text as it is (its records are its lines)."""

    #: what its files are: "text", "jsonl" (each readable as it is by objectives that read that
    #: form) or "rows" (converted for every objective)
    form: ClassVar[Literal["text", "jsonl", "rows"]] = "rows"

    def __init__(self, options: SourceOptions, base: Path):
        self.options = options
        self.base = Path(base)
        self.hub = None  # the dataset repository's snapshot, with ``repo``
        if options.repo:
            from modkit.hub import check_name, resolve

            problem = check_name(options.repo)
            if problem:
                raise UserError(f"repo: {problem}")
            paths = [options.path] if isinstance(options.path, str) else options.path
            self.hub = resolve(options.repo, repo_type="dataset", files=[*paths, f"{paths[0]}/**", "*.json"])
            self.base = self.hub.path

    def files(self) -> list[Path]:
        """The files the source reads, in order: every glob expanded (sorted); hashed for the
        cache key and the manifest. A folder stands for every file under it."""
        found: list[Path] = []
        for pattern in [self.options.path] if isinstance(self.options.path, str) else self.options.path:
            matches = sorted(glob.glob(str(self.base / pattern), recursive=True))
            if not matches:
                raise UserError(f"{self.base / pattern}: no such file (nothing matches)")
            for m in map(Path, matches):
                found += sorted(p for p in m.rglob("*") if p.is_file()) if m.is_dir() else [m]
        return found

    def rows(self, columns: list[str] | None = None) -> Iterator[Row]:
        """``(where, row)`` pairs, streamed; ``columns`` (when given) are all the caller reads."""
        raise NotImplementedError

    def text_chunks(self) -> Iterator[str]:
        raise NotImplementedError


# -- reading files ----------------------------------------------------------------------------

def strip_compression(name: str) -> str:
    for ending in COMPRESSIONS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading, decompressed by its ending."""
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise MissingExtraError(f"{path}: reading .zst files needs the zstandard package: "
                                    "pip install 'modkit[zstd]' (or pip install zstandard)") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def open_text(path: Path) -> io.TextIOWrapper:
    """``path`` as UTF-8 text, decompressed; universal newlines left to the caller (CSV needs that)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")


def read_chunks(path: Path, size: int = 1 << 20) -> Iterator[str]:
    """The file's text in pieces; a decoding error names the file."""
    try:
        with open_text(path) as f:
            while chunk := f.read(size):
                yield chunk
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None


# -- choosing a source for a plain string -----------------------------------------------------

def infer_source(registry, value: str, base: Path) -> str:
    """The source a plain ``data = "..."`` string is read by: the first (by name) whose
    options claim its first file (or, for files not here yet, a dataset repository's, its
    ending), else ``text``."""
    matches = sorted(glob.glob(str(base / value), recursive=True))
    for name in registry.names("source"):
        options = registry.get("source", name).options
        if options.claims(Path(matches[0])) if matches else \
                bool(options.suffixes) and strip_compression(value).endswith(options.suffixes):
            return name
    return "text"


# -- turning a source into the file an objective reads -----------------------------------------

@dataclass(frozen=True)
class DataFile:
    """What an objective reads (``path``) and what the manifest records of it (``record``:
    the source, each file's sha256, rows written and rows skipped)."""

    path: Path
    record: dict[str, Any]


def cache_folder() -> Path:
    return fileio.cache_folder() / "data"


def prepare(name: str, source: DataSource, reads: str, *, folder: Path | None = None) -> DataFile:
    """The file an objective that ``reads`` ``"text"`` or ``"records"`` is given for ``source``
    (the component ``name``): the source's own file when it is already that form, else its
    rows streamed into the cache once (see the module's doc)."""
    if reads not in ("text", "records"):
        raise ValueError(f"reads must be 'text' or 'records', not {reads!r}")
    files = source.files()
    hashes = {_shown(f, source.base): data_sha256(f) for f in files}
    record = {"source": name, "files": hashes, **({"hub": source.hub.record()} if source.hub else {})}
    direct = _direct(source, files, reads)
    if direct is not None:
        return DataFile(direct, record)
    options = source.options.model_dump(mode="json")
    key = hashlib.sha256(json.dumps([name, options, reads, list(hashes.values())]).encode()).hexdigest()
    path = Path(folder or cache_folder()) / f"{key[:24]}.{'txt' if reads == 'text' else 'jsonl'}"
    meta = path.with_name(path.name + ".json")
    if not (path.exists() and meta.exists()):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
            counts = _write(source, reads, out)
        meta.write_text(json.dumps(counts))
    counts = json.loads(meta.read_text())
    if counts["rows"] == 0:
        raise UserError(f"{_shown(files[0], source.base)}: no rows" +
                        (f" ({counts['skipped']} bad rows skipped)" if counts["skipped"] else ""))
    return DataFile(path, {**record, **counts})


def _shown(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _direct(source: DataSource, files: list[Path], reads: str) -> Path | None:
    """A lone uncompressed file already in the form the objective reads, with nothing to map
    or skip: read where it is."""
    o = source.options
    if len(files) != 1 or files[0].name != strip_compression(files[0].name) or o.fields or o.on_bad_rows != "error":
        return None
    return files[0] if source.form == {"text": "text", "records": "jsonl"}[reads] else None


def _write(source: DataSource, reads: str, out) -> dict[str, int]:
    if reads == "text" and source.form == "text":
        ended, lines = True, 0
        for chunk in source.text_chunks():
            out.write(chunk)
            ended, lines = chunk.endswith("\n"), lines + chunk.count("\n")
        if not ended:
            out.write("\n")
            lines += 1
        return {"rows": lines, "skipped": 0}  # rows: lines
    fields = source.options.fields
    if reads == "text":  # the text is all a text objective reads
        fields = {"text": fields.get("text", "text")}
    wanted = list(fields.values()) if reads == "text" else None
    rows = skipped = 0
    for where, row in source.rows(wanted):
        mapped = row if isinstance(row, BadRow) else _mapped(row, fields, reads)
        if isinstance(mapped, BadRow):
            if source.options.on_bad_rows == "error":
                raise UserError(f"{where}: {mapped.reason} (on_bad_rows = \"skip\" skips such rows)")
            skipped += 1
            continue
        out.write(mapped["text"] + "\n" if reads == "text" else json.dumps(mapped, ensure_ascii=False, default=str) + "\n")
        rows += 1
    return {"rows": rows, "skipped": skipped}


def _mapped(row: dict[str, Any], fields: dict[str, str], reads: str) -> dict[str, Any] | BadRow:
    """The row with each mapped column renamed to its role (the other columns kept as they are)."""
    missing = [column for column in fields.values() if column not in row]
    if missing:
        return BadRow(f"no column {missing[0]!r} (columns: {', '.join(map(str, row))})")
    renamed = set(fields.values())
    mapped = {**{k: v for k, v in row.items() if k not in renamed}, **{role: row[col] for role, col in fields.items()}}
    if reads == "text":
        text = mapped.get("text")
        if not isinstance(text, str):
            return BadRow(f"no text in column {fields.get('text', 'text')!r}" if text is None else
                          f"column {fields.get('text', 'text')!r} holds {type(text).__name__}, not text")
    return mapped


__all__ = ["SourceOptions", "DataSource", "BadRow", "DataFile", "COMPRESSIONS", "open_binary", "open_text",
           "read_chunks", "strip_compression", "infer_source", "prepare", "cache_folder"]
