"""Every registered component against its kind's contract (modkit.testing): the built-in ones
and every installed plugin's, exactly as a plugin author runs the kit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modkit import load_registry
from modkit.builder.assembly import options_from_tokenizer
from modkit.errors import UserError
from modkit.testing import check_backbone, check_objective, check_optimizer, check_peft, check_source, check_tokenizer

REGISTRY = load_registry()
SMALL = {"vocab_size": 101, "d_model": 32, "n_layers": 2, "encoder_layers": 2, "decoder_layers": 2, "n_heads": 4,
         "d_kv": 8, "d_ff": 64, "dropout": 0.0, "n_positions": 64}
#: options an objective cannot do without (its defaults cover the rest)
REQUIRED = {"labels": ["a", "b"], "tags": ["O", "B-X", "I-X"]}


def small_options(component, wanted: dict, **more):
    fields = component.options.model_fields
    return component.options(**{k: v for k, v in {**wanted, **more}.items() if k in fields})


def make_backbone(name: str, tokenizer=None):
    comp = REGISTRY.get("backbone", name)
    options = small_options(comp, SMALL)
    if tokenizer is not None:
        options = options_from_tokenizer(options.model_copy(update={"vocab_size": 0}), tokenizer, comp.load())
    return comp.load()(options)


@pytest.fixture(scope="module")
def trained_tokenizers(corpus_path, tmp_path_factory):
    """Each registered tokenizer trained on the corpus slice, and the file it saves."""
    tmp = tmp_path_factory.mktemp("tokenizers")
    (tmp / "c.txt").write_text(corpus_path.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    out = {}
    for name in REGISTRY.names("tokenizer"):
        comp = REGISTRY.get("tokenizer", name)
        tokenizer = comp.load().train([tmp / "c.txt"], small_options(comp, {"vocab_size": 400}))
        tokenizer.save(tmp / f"{name}.json")
        out[name] = (tokenizer, tmp / f"{name}.json")
    return out


@pytest.mark.parametrize("name", REGISTRY.names("tokenizer"))
def test_tokenizer_contract(name, trained_tokenizers):
    tokenizer, _ = trained_tokenizers[name]
    others = [(path, owner) for other, (owner, path) in trained_tokenizers.items() if other != name]
    check_tokenizer(tokenizer, foreign_files=others)


@pytest.mark.parametrize("name", REGISTRY.names("backbone"))
def test_backbone_contract(name):
    check_backbone(make_backbone(name))


def _peft_pairs():
    """Every PEFT method with every backbone it attaches to (a UserError from apply says it
    cannot: prefix tuning needs the core attention layers)."""
    pairs = []
    for peft in REGISTRY.names("peft"):
        pcomp = REGISTRY.get("peft", peft)
        for backbone in REGISTRY.names("backbone"):
            try:
                pcomp.load()(pcomp.options()).apply(make_backbone(backbone))
            except UserError:
                continue
            pairs.append(pytest.param(peft, backbone, id=f"{peft}-{backbone}"))
    return pairs


@pytest.mark.parametrize("peft, backbone", _peft_pairs())
def test_every_peft_method_on_every_backbone(peft, backbone):
    pcomp = REGISTRY.get("peft", peft)
    check_peft(pcomp.load()(pcomp.options()), make_backbone(backbone))


def _pairs():
    """Every objective with every backbone it accepts (check_backbone decides, as a build does)."""
    pairs = []
    for objective in REGISTRY.names("objective"):
        cls = REGISTRY.get("objective", objective).load()
        for backbone in REGISTRY.names("backbone"):
            try:
                cls.check_backbone(make_backbone(backbone))
            except UserError:
                continue
            pairs.append(pytest.param(objective, backbone, id=f"{objective}-{backbone}"))
    return pairs


@pytest.fixture(scope="module")
def sample_data(paragraphs, tmp_path_factory):
    """One JSONL file with the fields objectives commonly read (text, label, source, target,
    value, tokens and tags), so any objective's load_data finds its own."""
    path = tmp_path_factory.mktemp("objective-data") / "sample.jsonl"
    rows = [{"text": p[:300], "text_pair": p[100:300], "label": "ab"[i % 2], "source": p[:120], "target": p[:60],
             "value": len(p) / 100, "tokens": p[:200].split(),
             "tags": [["O", "B-X", "I-X"][k % 3] for k in range(len(p[:200].split()))]}
            for i, p in enumerate(paragraphs[:40])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("objective, backbone", _pairs())
def test_objective_contract(objective, backbone, trained_tokenizers, sample_data):
    """With the first registered tokenizer the objective accepts (mlm wants a mask token...)."""
    comp = REGISTRY.get("objective", objective)
    options = small_options(comp, REQUIRED)
    refusals = []
    for name, (tokenizer, _) in trained_tokenizers.items():
        candidate = make_backbone(backbone, tokenizer)
        try:
            comp.load()(options, candidate, tokenizer)
        except UserError as e:
            refusals.append(f"{name}: {e}")
            continue
        try:
            check_objective(comp.load(), options, candidate, tokenizer, sample_data, registry=REGISTRY)
        except UserError as e:
            pytest.fail(f"{objective}: the contract test's sample data or options do not suit it ({e}); "
                        "extend REQUIRED or sample_data in tests/contracts/test_components.py")
        return
    pytest.fail(f"{objective} accepts {backbone} in check_backbone but refuses it with every tokenizer: "
                f"{refusals}. A backbone it cannot work with must be refused by check_backbone, so a build "
                "fails before training.")


@pytest.mark.parametrize("name", REGISTRY.names("optimizer"))
def test_optimizer_contract(name):
    comp = REGISTRY.get("optimizer", name)
    check_optimizer(comp.load(), comp.options())


ROWS = [{"text": "first line", "label": "a"}, {"text": "second, with a comma", "label": "b"},
        {"text": "third", "label": "a"}]


def _sample(name: str, folder: Path) -> str:
    """ROWS in the format of the built-in source ``name``; the ``path`` to give it."""
    if name == "text":
        (folder / "s.txt").write_text("".join(r["text"] + "\n" for r in ROWS))
        return "s.txt"
    if name == "jsonl":
        (folder / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        return "s.jsonl"
    if name in ("csv", "tsv"):
        import csv

        with open(folder / f"s.{name}", "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"], delimiter="," if name == "csv" else "\t")
            writer.writeheader()
            writer.writerows(ROWS)
        return f"s.{name}"
    if name == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), folder / "s.parquet")
        return "s.parquet"
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder / "saved"))
    return "saved"


@pytest.mark.parametrize("name", REGISTRY.names("source"))
def test_source_contract(name, tmp_path):
    comp = REGISTRY.get("source", name)
    check_source(comp.load()(comp.options(path=_sample(name, tmp_path)), tmp_path), rows=len(ROWS))


def test_every_kind_has_components_to_check():
    for kind in ("tokenizer", "backbone", "objective", "peft", "task", "optimizer", "schedule", "source"):
        assert REGISTRY.names(kind), f"no {kind} registered: the contract tests above would check nothing"
    assert not REGISTRY.failures, f"plugins failed to load: {REGISTRY.failures}"


def _smoothing_pairs():
    """Every objective with a label_smoothing option, with the first backbone it accepts."""
    first = {}
    for pair in _pairs():
        objective = pair.values[0]
        if "label_smoothing" in REGISTRY.get("objective", objective).options.model_fields:
            first.setdefault(objective, pair)
    return list(first.values())


@pytest.mark.parametrize("objective, backbone", _smoothing_pairs())
def test_label_smoothing_smooths_the_objectives_loss(objective, backbone, trained_tokenizers, sample_data):
    """Label-smoothed cross-entropy is (1-ε)·CE + ε·(mean -log p over the classes): on the same
    logits the loss moves by the same amount from ε = 0 to 0.1 as from 0.1 to 0.2."""
    comp = REGISTRY.get("objective", objective)
    torch.manual_seed(0)
    for tokenizer, _ in trained_tokenizers.values():
        model = make_backbone(backbone, tokenizer)
        try:
            obj = comp.load()(small_options(comp, REQUIRED), model, tokenizer)
        except UserError:
            continue
        break
    data = obj.reader.load_data(sample_data, 16)
    batch = obj.reader.batch(data, 4, torch.Generator().manual_seed(0))
    model.eval()
    obj.head.eval()
    losses = []
    for epsilon in (0.0, 0.1, 0.2):
        obj.use_options(obj.options.model_copy(update={"label_smoothing": epsilon}))
        with torch.no_grad():
            losses.append(obj.head.loss(model, batch)[0].item())
    assert abs(losses[1] - losses[0]) > 1e-6
    assert losses[2] - losses[1] == pytest.approx(losses[1] - losses[0], rel=1e-3, abs=1e-6)
