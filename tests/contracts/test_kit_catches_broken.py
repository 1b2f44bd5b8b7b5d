"""The conformance kit fails on deliberately broken components: a check that passes everything
would prove nothing. Each broken variant differs from a working component in one way."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import import_or_skip
from modkit import TaskRecord, load_registry
from modkit.builder.assembly import options_from_tokenizer
from modkit.testing import check_backbone, check_objective, check_peft, check_source, check_tokenizer
from modkit_plugins.backbones.gpt import GPTOptions
from modkit_plugins.backbones.gpt_model import GPT
from modkit_plugins.objectives.classify import ClassifyOptions
from modkit_plugins.objectives.classify_impl import Classify, ClassifyExport, ClassifyReader
from modkit_plugins.peft.lora import LoRAOptions
from modkit_plugins.peft.lora_impl import LoRA, LoRALinear
from modkit_plugins.sources.jsonl import JsonLines, JsonLinesOptions
from modkit_plugins.tokenizers.bpe import BPEOptions
from modkit_plugins.tokenizers.bpe_model import BPETokenizer

# --- backbones: a rotary decoder on its own layers (examples/plugin-rope), broken one way each


@pytest.fixture(scope="module")
def rope():
    module = import_or_skip("modkit_rope.model", "pip install -e examples/plugin-rope")
    from modkit_rope import RopeOptions

    return module.RopeDecoder, RopeOptions(vocab_size=101, d_model=32, n_heads=4)


def test_the_unbroken_rope_decoder_passes(rope):
    cls, options = rope
    check_backbone(cls(options), export=False)


def _broken_decoders(base):
    class NotCausal(base):
        def attention_bias(self, attention_mask, q_len, k_len, dtype):
            keep = torch.ones(1, 1, q_len, k_len, dtype=torch.bool)
            if attention_mask is not None:
                keep = keep & attention_mask[:, None, None, :].bool()
            return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)

    class IgnoresMask(base):
        def attention_bias(self, attention_mask, q_len, k_len, dtype):
            return super().attention_bias(None, q_len, k_len, dtype)

    class IgnoresCache(base):
        def forward(self, input_ids, attention_mask=None, *, past_key_values=None, **kwargs):
            mask = attention_mask[:, -input_ids.shape[1]:] if attention_mask is not None else None
            return super().forward(input_ids, mask, **kwargs)  # as if every call were the first

    return {"not causal": (NotCausal, "not causal"), "ignores attention_mask": (IgnoresMask, "padding"),
            "ignores the cache": (IgnoresCache, "cache")}


@pytest.mark.parametrize("flaw", ["not causal", "ignores attention_mask", "ignores the cache"])
def test_check_backbone_fails_a_broken_decoder(rope, flaw):
    base, options = rope
    cls, message = _broken_decoders(base)[flaw]
    with pytest.raises(AssertionError, match=message):
        check_backbone(cls(options), export=False)


# --- PEFT: LoRA broken one way each

class _WrongAxis(LoRALinear):
    def delta_weight(self):  # the update transposed: right shape on a square layer, wrong values
        return (self.update.B @ self.update.A).T * self.scaling


class _InexactUnmerge(LoRALinear):
    @torch.no_grad()
    def unmerge(self):  # subtracting the update again: rounds, so the base weights are not restored
        self.base.weight.sub_(self.delta_weight().to(self.base.weight.dtype))
        self.merged = False


def _recast(model, cls):
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.__class__ = cls


class MergeDoesNothing(LoRA):
    def merge(self, model):  # takes the wrappers out without folding their updates in
        for owner in list(model.modules()):
            for attr, child in list(owner.named_children()):
                if isinstance(child, LoRALinear):
                    setattr(owner, attr, child.base)


class ScalesTheWrongAxis(LoRA):
    def apply(self, model):
        added = super().apply(model)
        _recast(model, _WrongAxis)
        return added


class UnmergeIsInexact(LoRA):
    def apply(self, model):
        added = super().apply(model)
        _recast(model, _InexactUnmerge)
        return added


class ReturnsTheBaseLayers(LoRA):
    def apply(self, model):
        super().apply(model)
        return [m.base for m in model.modules() if isinstance(m, LoRALinear)]


class NotIdentityAtInit(LoRA):
    def apply(self, model):
        added = super().apply(model)
        with torch.no_grad():
            for update in added:
                update.B.normal_()
        return added


class LeavesWrappers(LoRA):
    def merge(self, model):
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.merge()


def _gpt():
    return GPT(GPTOptions(vocab_size=101, d_model=32, n_layers=2, n_heads=4, n_positions=32, dropout=0.0))


def test_unbroken_lora_passes():
    check_peft(LoRA(LoRAOptions(targets=["attn.q", "attn.v"])), _gpt())


@pytest.mark.parametrize("method, message", [
    (MergeDoesNothing, "merge changes the outputs"),
    (ScalesTheWrongAxis, "merged outputs differ from unmerged"),
    (UnmergeIsInexact, "bit for bit"),
    (ReturnsTheBaseLayers, "not the layers they wrap"),
    (NotIdentityAtInit, "freshly applied method changes the outputs"),
    (LeavesWrappers, "left the method's modules"),
])
def test_check_peft_fails_a_broken_method(method, message):
    with pytest.raises(AssertionError, match=message):
        check_peft(method(LoRAOptions(targets=["attn.q", "attn.v"])), _gpt())


# --- tokenizers

@pytest.fixture(scope="module")
def bpe(corpus_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bpe")
    (tmp / "c.txt").write_text(corpus_path.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return BPETokenizer.train([tmp / "c.txt"], BPEOptions(vocab_size=300))


class RaisesOnForeignFiles(BPETokenizer):
    @classmethod
    def from_file(cls, path):
        json.loads(path.read_text(encoding="utf-8"))  # blows up on a binary file
        return super().from_file(path)


class LosesTheLastCharacter(BPETokenizer):
    def decode(self, ids, **kwargs):
        return super().decode(ids, **kwargs)[:-1]


class ReadsAnyJson(BPETokenizer):
    @classmethod
    def from_file(cls, path):
        return super().from_file(path) or (cls.__base__.from_file(path.parent / "tokenizer.json")
                                           if path.suffix == ".json" else None)


def test_the_unbroken_tokenizer_passes(bpe):
    check_tokenizer(bpe)


@pytest.mark.parametrize("cls, message", [(RaisesOnForeignFiles, "raised"), (LosesTheLastCharacter, "round trip"),
                                          (ReadsAnyJson, "a file in another format")])
def test_check_tokenizer_fails_a_broken_tokenizer(bpe, cls, message):
    broken = cls.__new__(cls)
    broken.__dict__.update(bpe.__dict__)
    with pytest.raises(AssertionError, match=message):
        check_tokenizer(broken)



def test_a_second_format_read_right_passes_and_read_wrong_fails(bpe, corpus_path, tmp_path):
    """A foreign file given with the tokenizer that wrote it may be read (a Unigram reader is not
    failed for reading Unigram files), but only if the ids are the writer's."""
    (tmp_path / "c.txt").write_text(corpus_path.read_text(encoding="utf-8")[20_000:40_000], encoding="utf-8")
    other = BPETokenizer.train([tmp_path / "c.txt"], BPEOptions(vocab_size=350))
    other.save(tmp_path / "other.json")
    check_tokenizer(bpe, foreign_files=[(tmp_path / "other.json", other)])
    with pytest.raises(AssertionError, match=r"read other\.json \(written by BPETokenizer\) but encodes differently"):
        check_tokenizer(bpe, foreign_files=[(tmp_path / "other.json", bpe)])  # the wrong owner: ids differ

# --- objectives

class GlobalRandomReader(ClassifyReader):
    def batch(self, data, batch_size, generator):
        return super().batch(data, batch_size, None)  # torch's global RNG, not the build's generator


class GlobalRandomBatches(Classify):
    Reader = GlobalRandomReader


class ServedByNobody(Classify):
    task = "nobody-serves-this"


class LengthFromLoadData(ClassifyExport):
    def task_record(self, seq_len):
        record = super().task_record(seq_len)
        return TaskRecord(**{**record.as_dict(), "max_length": self.reader.max_length})  # what load_data left


class StaleMaxLength(Classify):
    Export = LengthFromLoadData


@pytest.fixture(scope="module")
def classify_setup(bpe, paragraphs, tmp_path_factory):
    path = tmp_path_factory.mktemp("classify") / "data.jsonl"
    path.write_text("".join(json.dumps({"text": p[:200], "label": "ab"[i % 2]}) + "\n"
                            for i, p in enumerate(paragraphs[:30])))
    options = options_from_tokenizer(GPTOptions(vocab_size=0, d_model=32, n_layers=1, n_heads=4, n_positions=32),
                                     bpe, GPT)
    return ClassifyOptions(labels=["a", "b"]), GPT(options), bpe, path


def test_the_unbroken_objective_passes(classify_setup):
    check_objective(Classify, *classify_setup, registry=load_registry())


@pytest.mark.parametrize("cls, message", [(GlobalRandomBatches, "global RNG"), (ServedByNobody, "no task component"),
                                          (StaleMaxLength, r"task_record\(32\) says max_length 16")])
def test_check_objective_fails_a_broken_objective(classify_setup, cls, message):
    with pytest.raises(AssertionError, match=message):
        check_objective(cls, *classify_setup, registry=load_registry(), export=False)


# --- optimizers: SGD with momentum, broken one way each

class _Momentum(torch.optim.Optimizer):
    """Plain SGD with momentum, state as tensors: passes check_optimizer."""

    def __init__(self, groups, options=None):
        super().__init__(groups, {"lr": 1e-2, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)

    def _update(self, p, group):
        buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
        buf.mul_(0.9).add_(p.grad)
        p.add_(buf, alpha=-group["lr"])


class _DecaysIdleWeights(_Momentum):
    @torch.no_grad()
    def step(self, closure=None):
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])  # even without a gradient


class _PythonStepCount(_Momentum):
    def _update(self, p, group):
        super()._update(p, group)
        self.state[p]["step"] = self.state[p].get("step", 0) + 1  # an int: not a safetensors tensor


class _Noisy(_Momentum):
    def _update(self, p, group):
        super()._update(p, group)
        p.add_(torch.randn_like(p) * 1e-6)  # from the global RNG: two runs differ


class _ForgetsOnLoad(_Momentum):
    def load_state_dict(self, state_dict):
        super().load_state_dict({**state_dict, "state": {}})


def test_the_unbroken_optimizer_passes():
    from modkit.optim import OptimizerOptions
    from modkit.testing import check_optimizer

    check_optimizer(_Momentum, OptimizerOptions())


@pytest.mark.parametrize("cls, message", [
    (_DecaysIdleWeights, "without a gradient moved"),
    (_PythonStepCount, "is a int, not a tensor"),
    (_Noisy, "two identical runs gave different weights"),
    (_ForgetsOnLoad, "after a checkpoint round trip"),
])
def test_check_optimizer_fails_a_broken_optimizer(cls, message):
    from modkit.optim import OptimizerOptions
    from modkit.testing import check_optimizer

    with pytest.raises(AssertionError, match=message):
        check_optimizer(cls, OptimizerOptions())


# --- data sources: the JSONL source, broken one way each

class _ListOfRows(JsonLines):
    def rows(self, columns=None):
        return list(super().rows(columns))  # every row in memory at once


class _Nameless(JsonLines):
    def rows(self, columns=None):
        for n, (_, row) in enumerate(super().rows(columns), 1):
            yield f"row {n}", row


class _Shuffled(JsonLines):
    reads = 0

    def rows(self, columns=None):
        rows = list(super().rows(columns))
        type(self).reads += 1
        yield from (rows if self.reads % 2 else rows[::-1])


class _DropsNarrowedColumn(JsonLines):
    def rows(self, columns=None):
        for where, row in super().rows(None):
            yield where, {k: v for k, v in row.items() if columns is None or k not in columns}


@pytest.fixture
def jsonl_sample(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    return JsonLinesOptions(path="s.jsonl"), tmp_path


def test_the_unbroken_source_passes(jsonl_sample):
    check_source(JsonLines(*jsonl_sample), rows=2)


@pytest.mark.parametrize("cls, message", [
    (_ListOfRows, "must stream"), (_Nameless, "must be FILE:ROW"), (_Shuffled, "a second read gave other rows"),
    (_DropsNarrowedColumn, "must still give column 'text'"),
])
def test_check_source_fails_a_broken_source(jsonl_sample, cls, message):
    with pytest.raises(AssertionError, match=message):
        check_source(cls(*jsonl_sample))
