"""PEFT contract: own weights only, identity at init, merge == unmerged, unmerge exact."""
from __future__ import annotations

import torch

from modkit.interfaces import PeftWrapper, capabilities_of
from modkit.nn.blocks import iter_roles
from modkit.nn.prompt import reserved_positions
from modkit.testing.backbones import _check_cached_steps, _check_export

ATOL = 1e-4  # the ONNX parity tolerance: a merge may round, as an export does


def _run(backbone, ids) -> torch.Tensor:
    if getattr(backbone, "is_encoder_decoder", False):
        return backbone(ids, decoder_input_ids=ids).last_hidden_state
    return backbone(ids).last_hidden_state


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _wrappers(backbone) -> list:
    return [m for parent, name, _ in iter_roles(backbone) if hasattr(m := getattr(parent, name), "base")]


def check_peft(method, backbone, *, seed: int = 0, move: float = 0.1, export: bool = True) -> None:
    """``apply`` returns modules it inserted, with new weights, never the layers they wrap (it
    may add existing ones it trains, as Houlsby's layer norms), and they get gradients; a fresh method changes nothing (``identity_at_init``); once its weights have
    moved from their initial values (by ``move``-sized noise) it changes the outputs, every
    wrapper keeps its role and exposes ``.base``; for a method that ``merges``, ``wrapper.merge()`` computes what the
    unmerged wrapper did and ``unmerge()`` restores the base weights bit for bit; and
    ``method.merge(model)`` keeps the outputs and (``merges``) leaves no module of the method
    behind. A method that stays in the graph (not ``merges``): the outputs still cover the
    input's tokens, a sequence as long as the positions it leaves runs, a decoder's cached
    steps give its full pass, and (``export``) the ONNX graphs carry it, as onnxruntime shows."""
    torch.manual_seed(seed)
    backbone.eval()  # no dropout: outputs are compared
    ids = torch.randint(0, backbone.vocab_size, (2, 6))
    name = type(method).__name__
    with torch.no_grad():
        before = _run(backbone, ids)
    base_params = {id(p) for p in backbone.parameters()}
    modules = method.apply(backbone)
    assert modules, f"{name}.apply returned no modules"
    inside = {id(m) for m in backbone.modules()}
    assert all(id(m) in inside for m in modules), f"{name}.apply returned modules it did not insert into the backbone"
    own = [p for m in modules for p in m.parameters()]
    wrapped = {id(w.base) for w in _wrappers(backbone)}
    assert not any(id(m) in wrapped for m in modules) and any(id(p) not in base_params for p in own), \
        f"{name}.apply must return the method's new modules, not the layers they wrap"
    out = _run(backbone, ids)
    if type(method).identity_at_init:
        assert _diff(out, before) <= 1e-6, f"{name}: a freshly applied method changes the outputs by {_diff(out, before):.3g}"
    out.float().pow(2).sum().backward()
    assert all(p.grad is not None for p in own), f"{name}: some of the method's weights get no gradient"

    with torch.no_grad():
        for p in own:  # as if trained: merging a zero update would prove nothing
            p.add_(torch.randn_like(p) * move)
        moved = _run(backbone, ids)
        assert _diff(moved, before) > 1e-4, f"{name}: moving the method's weights does not change the outputs"
        for wrapper in _wrappers(backbone):
            base_role = getattr(wrapper.base, "modkit_role", wrapper.modkit_role)
            assert wrapper.modkit_role == base_role, f"{type(wrapper).__name__} changed the role {base_role!r}"
            if not type(method).merges:
                continue  # its wrappers stay in the graph: nothing to fold
            assert isinstance(wrapper, PeftWrapper), f"{type(wrapper).__name__} has .base but is no PeftWrapper " \
                "(modkit_role, base, merge, unmerge)"
            saved = {k: v.clone() for k, v in wrapper.base.state_dict().items()}
            wrapper.merge()
            merged = _run(backbone, ids)
            assert _diff(merged, moved) <= ATOL, f"{type(wrapper).__name__} on {wrapper.modkit_role}: merged outputs " \
                f"differ from unmerged ones by {_diff(merged, moved):.3g}"
            wrapper.unmerge()
            assert all(torch.equal(saved[k], v) for k, v in wrapper.base.state_dict().items()), \
                f"{type(wrapper).__name__} on {wrapper.modkit_role}: unmerge does not restore the base weights bit for bit"
        method.merge(backbone)
        after = _run(backbone, ids)
    assert _diff(after, moved) <= ATOL, f"{name}.merge changes the outputs by {_diff(after, moved):.3g}"
    if not type(method).merges:
        _check_kept(backbone, ids, name, export)
    if type(method).merges:
        left = {id(m) for m in backbone.modules()}
        assert not any(id(m) in left for m in modules), f"{name}.merge left the method's modules in the model"
        assert not _wrappers(backbone), f"{name}.merge left wrappers: {[type(w).__name__ for w in _wrappers(backbone)]}"


@torch.no_grad()
def _check_kept(backbone, ids: torch.Tensor, name: str, export: bool) -> None:
    """What a method that stays in the model must keep: see :func:`check_peft`."""
    out = _run(backbone, ids)
    assert out.shape[:2] == ids.shape, f"{name}: outputs of shape {tuple(out.shape)} for inputs {tuple(ids.shape)}"
    limit, reserved = capabilities_of(backbone).max_positions, reserved_positions(backbone)
    if limit is not None and reserved:  # the positions it reserves leave limit - reserved to the tokens
        assert _run(backbone, torch.randint(0, backbone.vocab_size, (1, limit - reserved))).shape[1] == limit - reserved
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    if getattr(backbone, "is_decoder", False) and not seq2seq:
        _check_cached_steps(backbone, ids, split=ids.shape[1] // 2)
    if export:
        mask = torch.ones_like(ids)
        mask[-1, -2:] = 0  # a right-padded row: the graph must mask around the method too
        _check_export(backbone, ids, mask, ATOL)
