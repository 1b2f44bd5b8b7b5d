"""The seq2seq objective on tiny BART and T5: batches, loss going down, evaluation, errors."""
import json

import pytest
import torch

from modkit.errors import ArtifactError
from modkit.interfaces import Tokenizer
from modkit.registry import get_registry


class WordTokenizer(Tokenizer):
    """Whitespace words over a fixed vocabulary: the smallest real tokenizer for these tests."""

    special_tokens = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}

    def __init__(self, words):
        self.vocab = ["<pad>", "</s>", "<unk>"] + sorted(set(words))
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self):
        return len(self.vocab)

    def encode(self, text, *, allow_special=False):
        return [self.ids.get(w, 2) for w in text.split()]

    def decode(self, ids, *, skip_special_tokens=False):
        return " ".join(self.vocab[i] for i in ids)

    def token_to_id(self, token):
        return self.ids.get(token)

    def id_to_token(self, id):
        return self.vocab[id] if 0 <= id < len(self.vocab) else None

    def to_json(self):
        return {"vocab": self.vocab}

    @classmethod
    def train(cls, files, options, progress=None):
        raise NotImplementedError

    @classmethod
    def from_file(cls, path):
        return None


WORDS = "the cat sat on a mat while dog ran far away".split()


@pytest.fixture()
def data_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(40):
        words = [WORDS[i] for i in torch.randint(len(WORDS), (5,), generator=g)]
        lines.append(json.dumps({"source": " ".join(words), "target": " ".join(reversed(words))}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def make(backbone_name, **backbone_values):
    registry = get_registry()
    tokenizer = WordTokenizer(WORDS)
    comp = registry.get("backbone", backbone_name)
    values = dict(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=2, dropout=0.0, **backbone_values)
    if backbone_name == "bart":
        values.update(pad_token_id=0, eos_token_id=1, decoder_start_token_id=1)
    backbone = comp.load()(comp.options(**values))
    obj = registry.get("objective", "seq2seq")
    return backbone, obj.load()(obj.options(), backbone, tokenizer)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_training_lowers_the_loss(family, data_file):
    torch.manual_seed(0)
    backbone, objective = make(family)
    data = objective.reader.load_data(data_file, seq_len=16)
    batch = objective.reader.batch(data, 8, torch.Generator().manual_seed(1))
    assert batch["input_ids"][:, -1].tolist().count(1) + (batch["attention_mask"][:, -1] == 0).sum() == 8
    assert torch.equal(batch["decoder_input_ids"][:, 0], torch.full((8,), backbone.config.decoder_start_token_id))
    assert torch.equal(batch["decoder_input_ids"][:, 1:][batch["labels"][:, :-1] != -100],
                       batch["labels"][:, :-1][batch["labels"][:, :-1] != -100])
    opt = torch.optim.AdamW(backbone.parameters(), lr=3e-3)
    first = None
    for step in range(30):
        loss, figures = objective.head.loss(backbone, objective.reader.batch(data, 8, torch.Generator().manual_seed(step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else figures["loss"]
    assert figures["loss"] < 0.8 * first
    scores = objective.head.evaluate(backbone, data)
    assert set(scores) == {f"heldout_{k}" for k in ("token_accuracy", "exact_match", "examples")}  # the loss: eval_loss
    assert 0 <= scores["heldout_exact_match"] <= 1
    assert scores["heldout_examples"] == len(data.heldout.sources) > 0
    assert backbone.training  # evaluate restores the mode
    assert objective.export.task_record(16).as_dict() == {"task": "seq2seq", "decoder_start_token_id": backbone.config.decoder_start_token_id,
                                    "eos_token_id": 1, "pad_token_id": 0, "max_new_tokens": 64, "max_length": 16}


def test_bad_line_names_file_and_line(tmp_path):
    _, objective = make("t5")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "the cat", "target": "cat the"}\n{"text": "x"}\n')
    with pytest.raises(ArtifactError, match=r"bad\.jsonl:2: expected a JSON object with 'source' and 'target'"):
        objective.reader.load_data(path, 16)


def test_refuses_a_decoder_only_backbone():
    registry = get_registry()
    gpt = registry.get("backbone", "gpt")
    backbone = gpt.load()(gpt.options(vocab_size=20, d_model=16, n_heads=2, n_layers=1))
    obj = registry.get("objective", "seq2seq")
    from modkit import UserError

    with pytest.raises(UserError, match="needs an encoder-decoder"):
        obj.load()(obj.options(), backbone, WordTokenizer(WORDS))


@pytest.mark.parametrize("example", ["tiny-t5", "tiny-bart"])
def test_example_spec_options_validate_and_its_data_loads(example):
    import re
    from pathlib import Path

    from modkit.spec import load_spec

    spec = load_spec(Path(__file__).parents[2] / "examples" / example / "spec.toml")
    assert spec.backbone.component.name == example.split("-")[1] and spec.backbone.options.d_model == 128
    data = spec.path(spec.model.stages[0].data)
    assert data.stat().st_size < 500_000
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    # the source is the target lower-cased without punctuation
    assert len(rows) > 1000 and all(r["source"] == re.sub(r"[,.;:?!]", "", r["target"]).lower() for r in rows)
