"""Contract checks for components, for modkit's own tests and for third-party plugin authors.

    from modkit.testing import check_tokenizer, check_backbone
    check_backbone(MyBackbone(MyOptions(vocab_size=100)))

Each check raises AssertionError with a message saying which part of the contract failed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

SAMPLE_TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "", "  spaces  and\ttabs\n",
                "numbers 3.14 and 1,000", "caf\u00e9 \u00fcber"]


def check_tokenizer(tokenizer, texts: Sequence[str] = SAMPLE_TEXTS) -> None:
    """Ids in range, batch == single, save -> from_file gives the same ids and specials."""
    for text in texts:
        ids = tokenizer.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids), \
            f"encode({text!r}) gave ids outside [0, {tokenizer.vocab_size})"
        assert isinstance(tokenizer.decode(ids), str)
    assert tokenizer.encode_batch(list(texts)) == [tokenizer.encode(t) for t in texts], "encode_batch != encode"
    for role, token in tokenizer.special_tokens.items():
        assert tokenizer.token_to_id(token) is not None, f"special token {role}={token!r} has no id"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        again = type(tokenizer).from_file(path)
        assert again is not None, f"{type(tokenizer).__name__}.from_file does not read what save wrote"
        assert [again.encode(t) for t in texts] == [tokenizer.encode(t) for t in texts], "ids change after save/load"
        assert again.special_tokens == tokenizer.special_tokens, "special tokens change after save/load"


def check_backbone(backbone, *, batch: int = 2, length: int = 7) -> None:
    """Forward shapes, hidden states, padding, role names, and a safetensors round trip."""
    import torch
    from safetensors.torch import load_file, save_file

    from modkit.nn.blocks import iter_roles

    backbone.eval()
    ids = torch.randint(0, backbone.vocab_size, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    with torch.no_grad():
        out = backbone(ids, mask, decoder_input_ids=ids, output_hidden_states=True) if seq2seq \
            else backbone(ids, mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (batch, length, backbone.d_model), "last_hidden_state shape"
    hidden = out.decoder_hidden_states if seq2seq else out.hidden_states
    assert hidden and torch.equal(hidden[-1], out.last_hidden_state), "the last hidden state must be last_hidden_state"
    roles = {role for _, _, role in iter_roles(backbone)}
    assert {"attn.q", "attn.k", "attn.v", "attn.o"} <= roles, f"missing attention roles (has {sorted(roles)})"
    if getattr(backbone, "is_decoder", False) and not seq2seq:
        padded_mask = mask.clone()
        padded_mask[0, length - 2:] = 0
        with torch.no_grad():
            short = backbone(ids[:1, : length - 2]).last_hidden_state
            padded = backbone(ids, padded_mask).last_hidden_state[:1, : length - 2]
        assert (short - padded).abs().max() < 1e-5, "right padding changes the outputs at real positions"
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "w.safetensors")
        save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, path)
        state = load_file(path)
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items()), "safetensors round trip"


def check_peft(method, backbone, *, tolerance: float = 1e-4) -> None:
    """The method attaches, trains only its own weights, and merging keeps the values: once its
    weights have moved from their initial values, the merged model computes what the unmerged
    one did (within ``tolerance``, the build's default parity tolerance)."""
    import torch

    before = {id(p) for p in backbone.parameters()}
    modules = method.apply(backbone)
    assert modules, f"{type(method).__name__}.apply returned no modules"
    own = [p for m in modules for p in m.parameters()]
    assert own and not any(id(p) in before for p in own), "apply must return only the method's new weights"
    ids = torch.randint(0, backbone.vocab_size, (2, 5))
    seq2seq = {"decoder_input_ids": ids} if getattr(backbone, "is_encoder_decoder", False) else {}
    out = backbone(ids, **seq2seq).last_hidden_state
    out.sum().backward()
    assert all(p.grad is not None for p in own), "some of the method's weights get no gradient"
    backbone.eval()  # no dropout in the comparison
    with torch.no_grad():
        for p in own:  # as training would: an update still at its initial value (LoRA's B = 0) hides a bad merge
            p.add_(torch.randn_like(p) * 0.05)
        unmerged = backbone(ids, **seq2seq).last_hidden_state
        method.merge(backbone)
        merged = backbone(ids, **seq2seq).last_hidden_state
    assert merged.shape == unmerged.shape, "merge changed the output shape"
    diff = float((merged - unmerged).abs().max())
    assert diff <= tolerance, f"merged outputs differ from the unmerged ones by {diff:.3g} (> {tolerance:g})"
