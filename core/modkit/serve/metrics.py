"""The server's counters, gauges and histograms, shared by all worker processes, and ``GET /metrics``
in Prometheus' text format (version 0.0.4), written here rather than through prometheus_client.

Every series has a fixed place in a table of float64 with one row per worker process. With
``--workers N`` the table is a file the parent process creates (in ``/dev/shm`` where there is
one) and every worker maps it: a worker writes only its own row and a scrape sums the rows, so
any worker answers with the whole server's counts. A worker that replaces a dead one adopts the
dead one's row and goes on adding to it, so counters never go down; gauges (requests in flight)
of a dead worker's row are reset when adopted and left out of sums until then.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import tempfile
from bisect import bisect_left
from itertools import product
from pathlib import Path

import numpy as np

#: the routes requests are counted under (a path not listed is "other")
ROUTES = ("run", "infer", "completions", "chat", "embeddings", "other")
#: the status codes counted one by one (any other is "other")
CODES = ("200", "400", "401", "404", "405", "413", "422", "499", "500", "503", "504", "other")
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

ROUTE = (("route", ROUTES),)
#: name -> (type, help, labels: ((name, values), ...), buckets); a series per combination of label values
SCHEMA: dict[str, tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...], tuple[float, ...]]] = {
    "modkit_requests_total": ("counter", "HTTP requests answered, by route and status code.",
                              (("route", ROUTES), ("code", CODES)), ()),
    "modkit_inputs_total": ("counter", "Inputs (texts, records, prompts x choices) of requests answered 200.",
                            ROUTE, ()),
    "modkit_request_seconds": ("histogram", "Time from request to the end of the answer.", ROUTE, SECONDS),
    "modkit_queue_seconds": ("histogram", "Time a request waited in the batching queue.", (), SECONDS),
    "modkit_batch_size": ("histogram", "Inputs per batch run by the model.", (), SIZES),
    "modkit_generated_tokens_total": ("counter", "Tokens generated.", (), ()),
    "modkit_time_to_first_token_seconds": ("histogram", "Streamed completions: time to the first token.", (),
                                           SECONDS),
    "modkit_stopped_decodings_total": ("counter", "Decodings ended early: a stop text, or no one waiting.", (), ()),
    "modkit_requests_in_flight": ("gauge", "Requests being answered.", (), ()),
    "modkit_queue_inputs": ("gauge", "Inputs waiting in the batching queue.", (), ()),
}


def _layout() -> tuple[dict[tuple[str, tuple[str, ...]], int], int]:
    """(metric, label values) -> first column of that series (a histogram takes its buckets,
    +Inf, sum and count), and the row's width; column 0 of every row holds the worker's pid."""
    columns, at = {}, 1
    for name, (kind, _, labels, buckets) in SCHEMA.items():
        for values in product(*(v for _, v in labels)):
            columns[(name, values)] = at
            at += len(buckets) + 3 if kind == "histogram" else 1
    return columns, at


COLUMNS, WIDTH = _layout()


def create_table(rows: int) -> str:
    """The shared table's file for a server of ``rows`` workers (the caller removes it)."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="modkit-serve-metrics-", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(b"\0" * (rows * WIDTH * 8))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Metrics:
    """One worker's view of the table: it writes its row and reads them all. ``path`` None: a
    table of one row in this process's memory (a single-process server, a test)."""

    def __init__(self, path: str | None = None):
        if path is None:
            self.table = np.zeros((1, WIDTH))
            self.row = self.table[0]
            self.row[0] = os.getpid()
            return
        self._file = open(path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), 0)
        self.table = np.frombuffer(self._map, dtype=np.float64).reshape(-1, WIDTH)
        self.row = self.table[self._claim_row()]

    def _claim_row(self) -> int:
        """A free row, else a dead worker's (its gauges reset); under a lock, since workers start together."""
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            pids = [int(p) for p in self.table[:, 0]]
            free = [i for i, p in enumerate(pids) if p == 0] or [i for i, p in enumerate(pids) if not _alive(p)]
            if not free:
                raise RuntimeError("no row left in the metrics table for a new worker")
            row = free[0]
            for name, (kind, *_rest) in SCHEMA.items():
                if kind == "gauge":
                    self.table[row, COLUMNS[(name, ())]] = 0.0
            self.table[row, 0] = os.getpid()
            return row
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to a counter or gauge (a label value the schema does not list counts as "other")."""
        self.row[self._column(name, labels)] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        start, buckets = self._column(name, labels), SCHEMA[name][3]
        self.row[start + bisect_left(buckets, value)] += 1  # le: the first bucket at or above the value
        self.row[start + len(buckets) + 1] += value
        self.row[start + len(buckets) + 2] += 1

    def total(self, name: str, **labels: str) -> float:
        """A counter's sum over all workers and over the label values not given (a histogram's: its count)."""
        kind, _, names, buckets = SCHEMA[name]
        offset = len(buckets) + 2 if kind == "histogram" else 0
        return float(sum(self.table[:, column + offset].sum() for (metric, values), column in COLUMNS.items()
                         if metric == name and all(labels.get(n, v) == v for (n, _), v in zip(names, values))))

    def _column(self, name: str, labels: dict[str, str]) -> int:
        values = tuple(labels[n] if labels[n] in known else "other" for n, known in SCHEMA[name][2])
        return COLUMNS[(name, values)]

    def render(self) -> str:
        """Every series summed over the workers, in Prometheus' text format."""
        live = np.array([p > 0 and _alive(int(p)) for p in self.table[:, 0]])
        lines = []
        for name, (kind, doc, names, buckets) in SCHEMA.items():
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
            rows = self.table[live] if kind == "gauge" else self.table
            for values in product(*(v for _, v in names)):
                start = COLUMNS[(name, values)]
                pairs = [f'{n}="{v}"' for (n, _), v in zip(names, values)]
                labels = "{" + ",".join(pairs) + "}" if pairs else ""
                if kind != "histogram":
                    lines.append(f"{name}{labels} {_number(rows[:, start].sum())}")
                    continue
                counts = rows[:, start:start + len(buckets) + 1].sum(0).cumsum()
                for bound, count in zip([*map(_number, buckets), "+Inf"], counts):
                    lines.append(f'{name}_bucket{{{",".join([*pairs, f"le={chr(34)}{bound}{chr(34)}"])}}} {_number(count)}')
                lines.append(f"{name}_sum{labels} {_number(rows[:, start + len(buckets) + 1].sum())}")
                lines.append(f"{name}_count{labels} {_number(rows[:, start + len(buckets) + 2].sum())}")
        return "\n".join(lines) + "\n"


def _number(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def remove_table(path: str | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)
