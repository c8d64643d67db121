"""Gated linear attention (GLA, Yang et al., 2023): a data-dependent decay per key dimension.

Per head, with a gate alpha_t in (0, 1)^{d_k} computed from the input token:

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t
    o_t = q_t S_t

followed by a per-head RMSNorm and a swish output gate. In the chunked form, b_i = sum_{s<=i} log alpha_s
(cumulative inside the chunk) gives the decay from position j to i as exp(b_i - b_j), which factorises:
(q_i * exp(b_i)) . (k_j * exp(-b_j)). exp(-b_j) grows inside a chunk, so log alpha is floored at
min_log_alpha and chunk_size * |min_log_alpha| <= 80 keeps every factor inside the fp32/bf16 range.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, chunk_size: int = 16, gate_rank: int = 16, gate_norm: float = 16.0,
        min_log_alpha: float = -5.0, **kwargs: Any,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if chunk_size * -min_log_alpha > 80:
            raise ValueError("chunk_size * |min_log_alpha| must be <= 80, or exp(-b) overflows inside a chunk")
        self.min_log_alpha = min_log_alpha
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.chunk_size = chunk_size
        # Dividing log-sigmoid by gate_norm keeps alpha near 1 at init, so memory starts long.
        self.gate_norm = gate_norm
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_rank, bias=False), nn.Linear(gate_rank, d_model))
        self.g_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.head_norm = nn.RMSNorm(self.head_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self._heads(self.q_proj(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        # Gates stay in at least fp32 (bf16 cumulative sums of log-gates drift).
        gate_dtype = torch.promote_types(x.dtype, torch.float32)
        log_alpha = F.logsigmoid(self.gk_proj(x).to(gate_dtype)) / self.gate_norm
        log_alpha = self._heads(log_alpha.clamp(min=self.min_log_alpha))
        return q, k, v, log_alpha

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        o = self.head_norm(o.transpose(1, 2)).reshape(b, t, -1)
        return self.o_proj(o * F.silu(self.g_proj(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, log_alpha = self._project(x)
        o = chunked_gla(q, k, v, log_alpha, self.chunk_size)
        return self._output(o.to(x.dtype), x)


def chunked_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_alpha: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """q, k, log_alpha: (B, H, T, Dk); v: (B, H, T, Dv). Returns (B, H, T, Dv)."""
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    q, k, v, log_alpha = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v, log_alpha))
    n = (t + pad) // c
    q, k, v, log_alpha = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v, log_alpha))
    cum = log_alpha.cumsum(dim=3)  # b_i, (B, H, N, C, Dk), between 0 and -80

    # Intra-chunk: A[i, j] = sum_d q_id exp(b_id - b_jd) k_jd for j <= i, as one factorised matmul.
    # masked_fill (not a multiply) so a large future entry can never turn into inf * 0 = NaN.
    future = torch.ones(c, c, dtype=torch.bool, device=q.device).triu(1)
    q_decayed = q * cum.exp()
    scores = (q_decayed @ (k * (-cum).exp()).transpose(-1, -2)).masked_fill(future, 0.0)
    intra = scores @ v

    # Across chunks: decay keys to the chunk end, queries from the chunk start; both factors are <= 1.
    last = cum[..., -1:, :]  # (B, H, N, 1, Dk)
    chunk_kv = (k * (last - cum).exp()).transpose(-1, -2) @ v  # (B, H, N, Dk, Dv)
    state = q.new_zeros(b, h, k.shape[-1], v.shape[-1])
    states = []
    for i in range(n):
        states.append(state)
        state = state * last[:, :, i].transpose(-1, -2).exp() + chunk_kv[:, :, i]
    inter = q_decayed @ torch.stack(states, dim=2)
    return (intra + inter).reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token recurrence; slow and obvious, the fast form must match it."""
    q, k, v, log_alpha = mixer._project(x)
    b, h, t, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        state = log_alpha[:, :, i, :, None].exp() * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append((q[:, :, i, :, None] * state).sum(-2))
    return mixer._output(torch.stack(outs, dim=2).to(x.dtype), x)
