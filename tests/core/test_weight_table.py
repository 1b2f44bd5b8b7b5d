"""WeightTable: one list of rows renames a checkpoint both ways, reporting what it cannot place."""
import pytest
import torch

from modkit.builder.hf.weight_table import Row, WeightTable
from modkit.errors import ArtifactError

TABLE = WeightTable([
    Row("embed.weight", "wte.weight", aliases=("lm_head.weight",)),
    Row("enc.{e}.w", "encoder.layer.{e}.dense.weight", transpose=True),
    Row("dec.{d}.w", "decoder.layer.{d}.dense.weight"),
    Row(("b.{i}.q", "b.{i}.k", "b.{i}.v"), "h.{i}.qkv", transpose=True, dim=1),
], ignore=[r"\.masked_bias$"], source="toy checkpoint")


def _ours():
    g = torch.Generator().manual_seed(0)
    state = {"embed.weight": torch.randn(5, 3, generator=g)}
    state |= {f"enc.{i}.w": torch.randn(4, 3, generator=g) for i in range(2)}
    state |= {f"dec.{i}.w": torch.randn(3, 3, generator=g) for i in range(3)}
    state |= {f"b.{i}.{r}": torch.randn(2, 3, generator=g) for i in range(2) for r in "qkv"}
    return state


def test_round_trip_with_transposes_fusion_and_layer_counts():
    ours = _ours()
    theirs = TABLE.to_hf(ours, prefix="model.", keep=("wte.",))
    assert sorted(theirs) == sorted(["wte.weight", "model.encoder.layer.0.dense.weight",
                                     "model.encoder.layer.1.dense.weight"]
                                    + [f"model.decoder.layer.{i}.dense.weight" for i in range(3)]
                                    + [f"model.h.{i}.qkv" for i in range(2)])
    assert theirs["model.encoder.layer.1.dense.weight"].shape == (3, 4)  # transposed
    assert theirs["model.h.0.qkv"].shape == (3, 6)  # three (2, 3) -> (3, 2) side by side
    assert torch.equal(theirs["model.h.0.qkv"][:, 2:4], ours["b.0.k"].T)
    back = TABLE.from_hf(theirs, prefix="model.")
    assert sorted(back) == sorted(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_aliases_read_never_written_and_first_name_wins():
    e = torch.ones(5, 3)
    state = TABLE.from_hf({"wte.weight": e, "lm_head.weight": torch.zeros(5, 3)})
    assert torch.equal(state["embed.weight"], e)
    assert list(TABLE.to_hf(state)) == ["wte.weight"]


def test_unknown_names_are_listed_as_the_file_has_them_and_ignored_ones_pass():
    weights = {"model.h.0.masked_bias": torch.zeros(1), "model.h.0.rotary": torch.zeros(1),
               "score.weight": torch.zeros(1)}
    with pytest.raises(ArtifactError, match=r"^toy checkpoint: 2 weight name\(s\) not recognised: "
                                            r"model\.h\.0\.rotary, score\.weight$"):
        TABLE.from_hf(weights, prefix="model.")
