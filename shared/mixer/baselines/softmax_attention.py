"""Causal softmax attention: the quadratic reference the linear mixers are compared against.

Per head: o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(d)) v_s.

It materialises the full T x T score matrix, so compute and memory grow as O(T^2): it exists to anchor
quality, and it is expected to FAIL the sub-quadratic complexity check.
"""

import math
from typing import Any

import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs: Any) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self._heads(self.q_proj(x)) / math.sqrt(self.head_dim)
        return q, self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def _output(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        t = x.shape[1]
        scores = q @ k.transpose(-1, -2)  # (B, H, T, T): the quadratic part
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        return self._output(scores.softmax(dim=-1) @ v)


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token by token with a growing key/value cache; the fast form must match it."""
    q, k, v = mixer._project(x)
    outs = []
    for i in range(x.shape[1]):
        weights = (q[:, :, i : i + 1] @ k[:, :, : i + 1].transpose(-1, -2)).softmax(dim=-1)
        outs.append(weights @ v[:, :, : i + 1])
    return mixer._output(torch.cat(outs, dim=2))
