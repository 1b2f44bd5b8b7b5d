"""Data sources: the same stage fed from JSONL, CSV, Parquet, gzipped text and a saved
`datasets` folder gives the same examples and the same weights; bad rows; compression; the
cache keyed on content."""
from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import modkit
from modkit.errors import SpecError, UserError
from modkit.spec import load_spec

from specs import tiny_gpt_parts, write_corpus

MODKIT = [sys.executable, "-m", "modkit"]
LABELS = ["neg", "pos"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODKIT_CACHE", str(tmp_path / "cache"))


def _lines(folder: Path) -> list[str]:
    text = write_corpus(folder, 12000).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _rows(lines: list[str]) -> list[dict]:
    """Records with the text under `review` and the label under `stars`, as users' exports name them."""
    return [{"review": line, "stars": LABELS[len(line) % 2], "id": i} for i, line in enumerate(lines)]


def _write_all(folder: Path, rows: list[dict]) -> dict[str, str]:
    """The rows as JSONL, CSV, Parquet, gzipped text (text only) and a datasets folder; the
    `data` value of a stage for each."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(folder / "rows.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(folder / "rows.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), folder / "rows.parquet", row_group_size=7)
    with gzip.open(folder / "rows.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(r["review"] + "\n" for r in rows)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder / "saved"))
    fields = '{ text = "review", label = "stars" }'
    return {"jsonl": f'{{ path = "rows.jsonl", fields = {fields} }}',
            "csv": f'{{ use = "csv", path = "rows.csv", fields = {fields} }}',
            "parquet": f'{{ path = "rows.parquet", fields = {fields} }}',
            "datasets": f'{{ use = "datasets", path = "saved", split = "train", fields = {fields} }}',
            "gzip": '"rows.txt.gz"'}


def _spec(folder: Path, objective: str, data: str) -> Path:
    spec = folder / f"spec-{abs(hash((objective, data)))}.toml"
    if not (folder / "corpus.txt").exists():  # what the tokenizer trains on
        write_corpus(folder, 12000)
    spec.write_text(f'name = "sources"\nseed = 3\n{tiny_gpt_parts()}\n[[stages]]\nobjective = {objective}\n'
                    f'data = {data}\nsteps = 3\nbatch_size = 4\nseq_len = 24\n[export]\nonnx = false\n')
    return spec


def _build(spec: Path, out: Path) -> tuple[dict, dict]:
    manifest = modkit.build(spec, out, progress=False, echo=lambda _: None)
    return manifest, load_file(out / "model.safetensors")


@pytest.mark.parametrize("objective, kinds", [
    ('{ use = "clm" }', ["jsonl", "csv", "parquet", "gzip", "datasets"]),
    (f'{{ use = "classify", labels = {json.dumps(LABELS)} }}', ["jsonl", "csv", "parquet", "datasets"]),
])
def test_every_source_gives_the_same_examples_and_weights(tmp_path, objective, kinds):
    datas = _write_all(tmp_path, _rows(_lines(tmp_path)))
    first_examples = first_weights = None
    for i, kind in enumerate(kinds):
        spec = _spec(tmp_path, objective, datas[kind])
        examples = list(modkit.preview(spec, n=6, texts=False, echo=lambda _: None))
        manifest, weights = _build(spec, tmp_path / f"out-{kind}")
        record = manifest["stages"][0]["data"]
        assert record["source"] == ("text" if kind == "gzip" else kind)
        assert record["rows"] == len(_lines(tmp_path)) and record["skipped"] == 0
        assert all(len(h) == 64 for h in record["files"].values())
        if first_examples is None:
            first_examples, first_weights = examples, weights
            continue
        assert examples == first_examples, kind
        assert weights.keys() == first_weights.keys()
        for name in weights:
            assert (weights[name] == first_weights[name]).all(), (kind, name)


def test_a_plain_text_file_is_read_where_it_is_and_equals_its_gzipped_copy(tmp_path):
    lines = _lines(tmp_path)
    (tmp_path / "plain.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "zipped.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '"plain.txt"'))
    plain = spec.data_file(0, spec.objectives[0][0].component.load())
    assert plain.path == tmp_path / "plain.txt"  # no copy
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '"zipped.txt.gz"'))
    zipped = spec.data_file(0, spec.objectives[0][0].component.load())
    assert zipped.path != plain.path and zipped.path.read_bytes() == plain.path.read_bytes()


def test_globs_and_every_compression_concatenate_in_order(tmp_path):
    pytest.importorskip("zstandard")
    import zstandard

    shards = tmp_path / "shards"
    shards.mkdir()
    parts = ["alpha one\nalpha two\n", "beta\n", "gamma without newline", "delta\n"]
    writers = [lambda p, t: gzip.open(p, "wt").write(t), lambda p, t: bz2.open(p, "wt").write(t),
               lambda p, t: lzma.open(p, "wt").write(t),
               lambda p, t: p.write_bytes(zstandard.ZstdCompressor().compress(t.encode()))]
    for i, (text, write, ending) in enumerate(zip(parts, writers, ["gz", "bz2", "xz", "zst"])):
        write(shards / f"{i}.txt.{ending}", text)
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '"shards/*.txt.*"'))
    data = spec.data_file(0, spec.objectives[0][0].component.load())
    assert data.path.read_text() == "alpha one\nalpha two\nbeta\ngamma without newline\ndelta\n"
    assert list(data.record["files"]) == [f"shards/{i}.txt.{e}" for i, e in enumerate(["gz", "bz2", "xz", "zst"])]


def test_zst_without_zstandard_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.txt.zst").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '"a.txt.zst"'))
    with pytest.raises(UserError, match=r"a\.txt\.zst: reading \.zst files needs the zstandard package.*modkit\[zstd\]"):
        spec.data_file(0, spec.objectives[0][0].component.load())


def _bad_csv(folder: Path) -> None:
    (folder / "bad.csv").write_text("review,stars\nfine text,pos\ntoo,many,columns\nalso fine,neg\n"
                                    "short\nlast one,pos\n", encoding="utf-8")


def test_a_bad_row_is_an_error_naming_file_and_row(tmp_path):
    _bad_csv(tmp_path)
    spec = _spec(tmp_path, f'{{ use = "classify", labels = {json.dumps(LABELS)} }}',
                 '{ path = "bad.csv", fields = { text = "review", label = "stars" } }')
    with pytest.raises(UserError, match=r"stages\[0\]\.data: .*bad\.csv:3: 3 columns, the header has 2 "
                                        r"\(on_bad_rows = \"skip\" skips such rows\)"):
        load_spec(spec).data_file(0, load_spec(spec).objectives[0][0].component.load())
    result = subprocess.run([*MODKIT, "build", str(spec), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "bad.csv:3: 3 columns" in result.stderr and "Traceback" not in result.stderr


def test_skipped_bad_rows_are_counted_in_the_manifest(tmp_path):
    _bad_csv(tmp_path)
    (tmp_path / "more.jsonl").write_text('{"review": "x", "stars": "pos"}\nnot json\n{"stars": "neg"}\n')
    spec = _spec(tmp_path, f'{{ use = "classify", labels = {json.dumps(LABELS)}, holdout = 0 }}',
                 '{ path = "bad.csv", fields = { text = "review", label = "stars" }, on_bad_rows = "skip" }')
    manifest, _ = _build(spec, tmp_path / "out")
    assert manifest["stages"][0]["data"]["rows"] == 3 and manifest["stages"][0]["data"]["skipped"] == 2
    assert manifest["spec"]["stages"][0]["data"]["on_bad_rows"] == "skip"
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '{ path = "more.jsonl", fields = { text = "review" }, '
                                                         'on_bad_rows = "skip" }'))
    data = spec.data_file(0, spec.objectives[0][0].component.load())
    assert data.record["rows"] == 1 and data.record["skipped"] == 2 and data.path.read_text() == "x\n"


def test_the_converted_file_is_keyed_on_the_sources_content(tmp_path):
    rows = _rows(_lines(tmp_path))[:40]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    spec_path = _spec(tmp_path, '{ use = "clm" }', '{ path = "rows.parquet", fields = { text = "review" } }')
    clm = load_spec(spec_path).objectives[0][0].component.load()
    first = load_spec(spec_path).data_file(0, clm)
    assert load_spec(spec_path).data_file(0, clm).path == first.path  # reused
    rows[5]["review"] = "changed"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    second = load_spec(spec_path).data_file(0, clm)
    assert second.path != first.path and "changed\n" in second.path.read_text()


def test_spec_errors_name_the_key(tmp_path):
    spec = _spec(tmp_path, '{ use = "clm" }', '{ use = "parquett", path = "x.parquet" }')
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert "stages[0].data.use: unknown source 'parquett'; did you mean 'parquet'" in str(e.value)
    spec = _spec(tmp_path, '{ use = "clm" }', '{ use = "csv", path = "shards/*.csv", delimeter = ";" }')
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    message = str(e.value)
    assert "stages[0].data.path: no file matches 'shards/*.csv'" in message
    assert "stages[0].data.delimeter: csv takes no option 'delimeter' (did you mean 'delimiter'?); it takes: " in message


def test_a_datasets_folder_with_several_splits_needs_one_named(tmp_path):
    import datasets

    rows = _rows(_lines(tmp_path))[:10]
    datasets.DatasetDict({"a": datasets.Dataset.from_list(rows), "b": datasets.Dataset.from_list(rows[:3])}) \
        .save_to_disk(str(tmp_path / "saved"))
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '{ path = "saved", fields = { text = "review" } }'))
    assert spec.sources[0]["data"].component.name == "datasets"  # the folder's markers name its source
    with pytest.raises(UserError, match=r"several splits; choose one with split = one of \['a', 'b'\]"):
        spec.data_file(0, spec.objectives[0][0].component.load())
    spec = load_spec(_spec(tmp_path, '{ use = "clm" }', '{ path = "saved", split = "b", fields = { text = "review" } }'))
    assert spec.data_file(0, spec.objectives[0][0].component.load()).record["rows"] == 3


def test_the_tokenizer_trains_on_globs_of_compressed_shards_as_on_the_plain_text(tmp_path):
    text = write_corpus(tmp_path, 12000).read_text(encoding="utf-8")
    (tmp_path / "shards").mkdir()
    half = text.index("\n", len(text) // 2) + 1
    for i, part in enumerate([text[:half], text[half:]]):
        with gzip.open(tmp_path / "shards" / f"{i}.txt.gz", "wt", encoding="utf-8") as f:
            f.write(part)
    plain = load_spec(_spec(tmp_path, '{ use = "clm" }', '"corpus.txt"'))
    sharded = _spec(tmp_path, '{ use = "clm" }', '"shards/*.txt.gz"')
    sharded.write_text(sharded.read_text().replace('train_on = ["corpus.txt"]', 'train_on = ["shards/*.txt.gz"]'))
    sharded = load_spec(sharded)
    assert plain.tokenizer_text() == [tmp_path / "corpus.txt"]
    (converted,) = sharded.tokenizer_text()
    assert converted.read_text(encoding="utf-8") == text + ("" if text.endswith("\n") else "\n")
    train = plain.tokenizer.component.load().train
    assert train([converted], plain.tokenizer.options).to_json() == \
        train([tmp_path / "corpus.txt"], plain.tokenizer.options).to_json()
