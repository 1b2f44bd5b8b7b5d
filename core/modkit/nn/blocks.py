"""The shared transformer blocks backbones are built from.

Every projection carries a role name (``attn.q``, ``cross.o``, ``ffn.up``...) in its
``modkit_role`` attribute, the same in every backbone; PEFT methods find their targets by
role (see :func:`iter_roles`), so any backbone built from these blocks gets them all.
"""
from __future__ import annotations

import math
from fnmatch import fnmatchcase
from functools import partial
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

KVCache = tuple[torch.Tensor, torch.Tensor]  # keys, values: (batch, heads, time, head_dim)
#: ``(queries, keys, position_ids) -> (queries, keys)``: queries and keys (B, H, T, Dh) of the
#: new tokens, before keys join the cache; position_ids (B or 1, T). Rotary embeddings are one.
PositionTransform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def role_linear(d_in: int, d_out: int, role: str, bias: bool = True) -> nn.Linear:
    """An nn.Linear tagged with its role name."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    layer.modkit_role = role
    return layer


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT/BERT/BART initialisation, for ``model.apply``: N(0, std) weights, zero biases, a
    zero embedding row for the padding id."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


def iter_roles(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """Yield ``(parent, attribute, role)`` for every module that has a role.

    A module with a role is not searched further, so a PEFT wrapper (which keeps the role of
    what it wraps) is found once, not twice.
    """
    for name, child in model.named_children():
        role = getattr(child, "modkit_role", None)
        if role is not None:
            yield model, name, role
        else:
            yield from iter_roles(child)


def role_matches(role: str, patterns: Iterable[str]) -> bool:
    """Whether ``role`` matches one of the shell-style ``patterns`` (``attn.q``, ``attn.*``,
    ``*.o``, ``*``): the one rule every PEFT method's ``targets`` follow."""
    return any(fnmatchcase(role, pattern) for pattern in patterns)


def match_roles(model: nn.Module, patterns: Iterable[str]) -> list[tuple[nn.Module, str, str]]:
    """``(parent, attribute, role)`` of every role-carrying module whose role matches
    ``patterns`` (see :func:`iter_roles` and :func:`role_matches`); ``getattr(parent,
    attribute)`` is the module, ``setattr`` replaces it."""
    patterns = list(patterns)
    return [(parent, name, role) for parent, name, role in iter_roles(model) if role_matches(role, patterns)]


class RMSNorm(nn.Module):
    """T5's norm: scale by the root mean square, no mean subtraction, no bias."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)  # in fp32, as T5 does
        x = x * torch.rsqrt(variance + self.eps).to(x.dtype)
        return self.weight * x


def make_norm(kind: str, d: int, eps: float) -> nn.Module:
    return RMSNorm(d, eps) if kind == "rms" else nn.LayerNorm(d, eps=eps)


def attention_bias(
    attention_mask: torch.Tensor | None,
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """The additive bias (batch|1, 1, q_len, k_len) for padding and causality, or None.

    ``attention_mask`` is (batch, k_len) with 1 for real tokens. With a cache, the queries are
    the last ``q_len`` of the ``k_len`` positions.
    """
    if not causal:
        if attention_mask is None:
            return None
        # padding only: Hugging Face's form (1 - mask, the minimum where that is 1), which
        # onnxruntime's transformer optimizer recognises and fuses into one Attention node
        inverted = 1.0 - attention_mask[:, None, None, :].expand(-1, 1, 1, k_len).to(dtype)
        return inverted.masked_fill(inverted.bool(), torch.finfo(dtype).min)
    keep = None
    if attention_mask is not None:
        keep = attention_mask[:, None, None, :].bool()
    if causal:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        tri = (torch.arange(k_len, device=device)[None, :] <= q_pos)[None, None]
        keep = tri if keep is None else keep & tri
    if keep is None:
        return None
    return torch.where(keep, 0.0, torch.finfo(dtype).min).to(dtype)


class Attention(nn.Module):
    """Multi-head attention with role-named projections, a KV cache and a prefix slot.

    ``role`` is ``"attn"`` for self-attention or ``"cross"`` for attention over another
    sequence. ``scale=None`` means 1/sqrt(head_dim); T5 passes 1.0. ``prefix`` is set by
    prefix tuning to a module returning extra (keys, values) for a batch size.
    ``positions`` (self-attention only) transforms the new tokens' queries and keys by their
    positions before attention and before the keys are cached (see :data:`PositionTransform`);
    additive position schemes (T5's bias) go through ``bias`` instead.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        role: str = "attn",
        d_head: int | None = None,
        d_kv_source: int | None = None,
        bias: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
        positions: PositionTransform | None = None,
    ):
        super().__init__()
        if positions is not None and role == "cross":
            raise ValueError("a position transform applies to self-attention, not cross-attention")
        self.n_heads = n_heads
        self.d_head = d_head or d_model // n_heads
        inner = n_heads * self.d_head
        src = d_kv_source or d_model
        self.q = role_linear(d_model, inner, f"{role}.q", bias)
        self.k = role_linear(src, inner, f"{role}.k", bias)
        self.v = role_linear(src, inner, f"{role}.v", bias)
        self.o = role_linear(inner, d_model, f"{role}.o", bias)
        self.scale = scale
        self.dropout = dropout
        self.is_cross = role == "cross"
        self.positions = positions
        self.prefix: nn.Module | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, H*Dh) -> (B, H, T, Dh)
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KVCache:
        """Keys and values (B, H, T, Dh) of ``x``: for cross-attention, the cache of a source."""
        return self._heads(self.k(x)), self._heads(self.v(x))

    def forward(
        self,
        x: torch.Tensor,
        *,
        source: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        past: KVCache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, KVCache | None]:
        """Attend from ``x`` (B, Tq, D) to itself, or to ``source`` for cross-attention.

        ``bias`` is additive, broadcastable to (B, H, Tq, Tk) over the cached + new keys.
        ``causal`` without a bias asks for the fused causal kernel. For cross-attention a
        ``past`` holds the source's keys and values, computed once. ``position_ids`` (B or 1,
        Tq) feed the ``positions`` transform; they default to past + 0..Tq-1.
        Returns (output, attention weights or None, cache or None).
        """
        b, tq, _ = x.shape
        q = self._heads(self.q(x))
        if self.is_cross and past is not None:
            k, v = past
        else:
            k, v = self.project_kv(source if source is not None else x)
            if self.positions is not None:
                if position_ids is None:
                    start = past[0].shape[2] if past is not None else 0
                    position_ids = torch.arange(start, start + tq, device=x.device)[None]
                q, k = self.positions(q, k, position_ids)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v) if use_cache else None

        if causal and bias is None and (k.shape[2] != tq or self.prefix is not None or output_attentions):
            # the fused kernel's causal mask is only right when queries and keys coincide
            bias = attention_bias(None, tq, k.shape[2], causal=True, dtype=q.dtype, device=q.device)
        if self.prefix is not None:  # trained prefix keys/values, visible to every query
            pk, pv = self.prefix(b)
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
            if bias is not None and bias.shape[-1] < k.shape[2]:  # a backbone may bias the prefix itself (T5)
                bias = F.pad(bias, (pk.shape[2], 0), value=0.0)

        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.d_head)
            scores = (q @ k.transpose(-1, -2)) * scale
            if bias is not None:
                scores = scores + bias
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=dropout,
                is_causal=causal and bias is None, scale=self.scale,
            )
        out = out.transpose(1, 2).reshape(b, tq, self.n_heads * self.d_head)
        return self.o(out), weights, present


def prefix_positions(blocks: nn.ModuleList) -> int:
    """How many positions the self-attention prefixes of ``blocks`` occupy before the tokens.

    A prefix module may say ``positions = n``: the tokens then sit at positions n, n+1, ...,
    as when a prefix is a KV cache of n earlier tokens (Hugging Face PEFT's prefix tuning).
    Backbones add it to their position ids (or relative distances); 0 without such a prefix.
    """
    most = 0  # a plain loop: torch.compile does not trace max(..., default=) and breaks the graph
    for block in blocks:
        if block.attn.prefix is not None:
            most = max(most, getattr(block.attn.prefix, "positions", 0))
    return most


class FeedForward(nn.Module):
    """Position-wise feed-forward: down(act(up(x))), or down(act(gate(x)) * up(x)) if gated."""

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "gelu", bias: bool = True,
                 gated: bool = False, dropout: float = 0.0):
        super().__init__()
        self.up = role_linear(d_model, d_ff, "ffn.up", bias)
        self.gate = role_linear(d_model, d_ff, "ffn.gate", bias) if gated else None
        self.down = role_linear(d_ff, d_model, "ffn.down", bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))
        return self.down(self.dropout(h))


class Block(nn.Module):
    """One transformer layer: self-attention, optional cross-attention, feed-forward.

    ``pre_norm`` chooses GPT-2/T5 style (x + f(norm(x))) over GPT-1/BERT/BART style
    (norm(x + f(x))). Residual dropout is applied to each sublayer's output.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        pre_norm: bool,
        cross: bool = False,
        norm: str = "layer",
        eps: float = 1e-5,
        activation: str = "gelu",
        gated: bool = False,
        bias: bool = True,
        d_head: int | None = None,
        attn_scale: float | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        positions: PositionTransform | None = None,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        attn = partial(Attention, d_model, n_heads, d_head=d_head, bias=bias, scale=attn_scale,
                       dropout=attn_dropout)
        self.attn = attn(role="attn", positions=positions)
        self.attn_norm = make_norm(norm, d_model, eps)
        self.cross = attn(role="cross") if cross else None
        self.cross_norm = make_norm(norm, d_model, eps) if cross else None
        self.ffn = FeedForward(d_model, d_ff, activation=activation, bias=bias, gated=gated,
                               dropout=ffn_dropout)
        self.ffn_norm = make_norm(norm, d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def _sublayer(self, x, norm, fn):
        if self.pre_norm:
            out, *rest = fn(norm(x))
            return (x + self.dropout(out), *rest)
        out, *rest = fn(x)
        return (norm(x + self.dropout(out)), *rest)

    def forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        source: torch.Tensor | None = None,
        source_bias: torch.Tensor | None = None,
        past: tuple[KVCache, KVCache | None] | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        position_ids: torch.Tensor | None = None,
    ):
        """Returns (x, self-attention weights, cross-attention weights, cache).

        The cache is (self-attention keys/values, cross-attention keys/values or None).
        ``position_ids`` go to the self-attention's position transform, if it has one.
        """
        self_past, cross_past = past if past is not None else (None, None)
        x, self_w, self_kv = self._sublayer(x, self.attn_norm, lambda h: self.attn(
            h, bias=bias, causal=causal, past=self_past, use_cache=use_cache,
            output_attentions=output_attentions, position_ids=position_ids))
        cross_w = cross_kv = None
        if self.cross is not None:
            x, cross_w, cross_kv = self._sublayer(x, self.cross_norm, lambda h: self.cross(
                h, source=source, bias=source_bias, past=cross_past, use_cache=use_cache,
                output_attentions=output_attentions))
        x, = self._sublayer(x, self.ffn_norm, lambda h: (self.ffn(h),))
        cache = (self_kv, cross_kv) if use_cache else None
        return x, self_w, cross_w, cache


class LearnedPositions(nn.Embedding):
    """Absolute learned position embeddings; ``offset`` shifts ids (BART uses 2)."""

    def __init__(self, n_positions: int, d_model: int, offset: int = 0):
        super().__init__(n_positions + offset, d_model)
        self.offset = offset

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(position_ids + self.offset)


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    *,
    past: list | None = None,
    use_cache: bool = False,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
    final: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **block_inputs,
) -> tuple[torch.Tensor, tuple | None, tuple | None, tuple | None, list | None]:
    """Run a stack of :class:`Block` s, collecting what transformers reports.

    ``final`` (a last norm, say) is applied after the last block. Returns (x, hidden states:
    the input of every block and the final x, self-attention weights, cross-attention
    weights, cache), each None unless asked for.
    """
    hidden, self_ws, cross_ws, cache = [], [], [], []
    for i, block in enumerate(blocks):
        if output_hidden_states:
            hidden.append(x)
        x, self_w, cross_w, kv = block(x, past=past[i] if past else None, use_cache=use_cache,
                                       output_attentions=output_attentions, **block_inputs)
        self_ws.append(self_w)
        cross_ws.append(cross_w)
        cache.append(kv)
    if final is not None:
        x = final(x)
    if output_hidden_states:
        hidden.append(x)
    return (
        x,
        tuple(hidden) if output_hidden_states else None,
        tuple(self_ws) if output_attentions else None,
        tuple(cross_ws) if output_attentions else None,
        cache if use_cache else None,
    )
