"""The bart-* and t5-* presets have the published parameter counts (built on the meta device)."""
import pytest
import torch

from modkit.registry import get_registry

# name -> (published size, the checkpoint's exact count where transformers builds the same model)
PUBLISHED = {
    "bart-base": (140e6, 139_420_416),
    "bart-large": (406e6, 406_291_456),
    "t5-small": (60e6, 60_506_624),
    "t5-base": (220e6, 222_903_552),
    "t5-v1_1-small": (77e6, 76_961_152),
}


def build_on_meta(name: str):
    component, values = get_registry().resolve("backbone", name)
    with torch.device("meta"):
        return component.load()(component.options(**values))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_count(name):
    published, exact = PUBLISHED[name]
    count = sum(p.numel() for p in build_on_meta(name).parameters())
    assert count == exact
    assert abs(count - published) / published < 0.015
