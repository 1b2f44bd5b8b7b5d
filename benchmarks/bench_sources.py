"""Data sources: a Parquet corpus streamed into what an objective reads, with flat memory.

    python benchmarks/bench_sources.py [--sizes 10 100 1000] [--forms text records]

For each size (MB of text), a Parquet file is written (in a temporary folder, never
committed) from the lines of ``../shared/data/pydoc-library.txt`` repeated: columns ``body``
(a line) and ``id``, row groups of 65,536 rows, no compression and no dictionary, so the file is
as large as its text. A fresh process then runs :func:`modkit.sources.prepare` on it, as a
build does for ``data = { path = "corpus.parquet", fields = { text = "body" } }``: the rows
streamed into the text file a text objective reads (``text``) or the JSON-lines file a
records objective reads (``records``). The table shows that process's peak resident memory
(ru_maxrss), which must not grow with the corpus, its time and throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PREPARE = r'''
import json, resource, sys, time
from pathlib import Path
import modkit
from modkit.sources import prepare

path, form = Path(sys.argv[1]), sys.argv[2]
component = modkit.get_registry().get("source", "parquet")
options = component.options(path=path.name, fields={"text": "body"})
t0 = time.perf_counter()
data = prepare("parquet", component.load()(options, path.parent), form)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": data.record["rows"],
                  "out_mb": data.path.stat().st_size / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def write_parquet(source: Path, dest: Path, megabytes: int) -> float:
    """``source``'s non-empty lines, repeated until ``megabytes`` MB of text; the MB written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    schema = pa.schema([("body", pa.string()), ("id", pa.int64())])
    written = rows = 0
    with pq.ParquetWriter(dest, schema, compression="none", use_dictionary=False) as writer:
        while written < megabytes * 1_000_000:
            for start in range(0, len(lines), 65536):
                batch = lines[start: start + 65536]
                writer.write_table(pa.table({"body": batch, "id": list(range(rows, rows + len(batch)))}, schema=schema))
                rows += len(batch)
                written += sum(len(b.encode()) for b in batch) + len(batch)
                if written >= megabytes * 1_000_000:
                    break
    return written / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pydoc-library.txt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="MB of text")
    parser.add_argument("--forms", nargs="+", default=["text", "records"], choices=["text", "records"])
    args = parser.parse_args()
    print("| text | Parquet file | form | rows | seconds | MB/s | written (MB) | peak RSS (MB) |\n"
          "|---:|---:|---|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            corpus = tmp / f"corpus-{size}.parquet"
            text_mb = write_parquet(args.corpus, corpus, size)
            for form in args.forms:
                env = {**os.environ, "MODKIT_CACHE": str(tmp / "cache")}
                done = subprocess.run([sys.executable, "-c", PREPARE, str(corpus), form],
                                      capture_output=True, text=True, env=env)
                if done.returncode:
                    sys.exit(done.stderr)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {text_mb:.0f} MB | {corpus.stat().st_size / 1e6:.0f} MB | {form} | {r['rows']:,} | "
                      f"{r['seconds']:.1f} | {text_mb / r['seconds']:.1f} | {r['out_mb']:.0f} | {r['peak_rss_mb']:.0f} |",
                      flush=True)
                for f in (tmp / "cache" / "data").glob("*"):
                    f.unlink()  # the next form or size starts from an empty cache, and the disk stays small
            corpus.unlink()


if __name__ == "__main__":
    main()
