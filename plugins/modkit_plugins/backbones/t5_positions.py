"""T5's relative position bias (only T5 uses it, so it lives with the T5 plugin)."""
from __future__ import annotations

import math

import torch
from torch import nn


class RelativePositionBias(nn.Module):
    """T5's position scheme: a learned per-head bias for each bucket of key - query distance.

    Near distances get a bucket each, far ones share logarithmically wider buckets up to
    ``max_distance``. Bidirectional (encoder) buckets keep the sign; causal (decoder) ones
    only look back. Computed once per stack and added to every layer's attention scores.
    """

    def __init__(self, num_buckets: int, max_distance: int, n_heads: int, *, bidirectional: bool):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """Bucket ids of relative positions (key position - query position)."""
        n = self.num_buckets
        buckets = torch.zeros_like(relative)
        if self.bidirectional:
            n //= 2
            buckets = buckets + (relative > 0).long() * n
            distance = relative.abs()
        else:
            distance = (-relative).clamp(min=0)
        exact = n // 2
        # log(0) is -inf here, but those distances take the exact branch below
        far = exact + (torch.log(distance.float() / exact) / math.log(self.max_distance / exact)
                       * (n - exact)).long()
        far = far.clamp(max=n - 1)
        return buckets + torch.where(distance < exact, distance, far)

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        """The bias (1, H, q_len, k_len); queries are the last ``q_len`` of ``k_len`` positions."""
        device = self.embedding.weight.device
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        values = self.embedding(self.bucket(k_pos - q_pos))  # (q, k, H)
        return values.permute(2, 0, 1)[None]
