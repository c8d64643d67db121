"""RetNet-style retention (Sun et al., 2023): linear attention with a fixed per-head decay.

Per head h with decay gamma_h = 1 - 2^(-5 - h) (heads forget at different, fixed rates):

    S_t = gamma_h S_{t-1} + k_t^T v_t
    o_t = q_t S_t

followed by a per-head RMSNorm and a swish output gate. The fast chunked form uses the decay matrix
D[i, j] = gamma^(i - j) (i >= j) inside a chunk and carries S across chunks. Rotary/xPos is omitted.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, chunk_size: int = 64, **kwargs: Any) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.chunk_size = chunk_size
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.g_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.head_norm = nn.RMSNorm(self.head_dim)
        # log(gamma_h), fixed (a buffer, not trained).
        gammas = 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float32))
        self.register_buffer("log_decay", gammas.log(), persistent=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self._heads(self.q_proj(x)) / math.sqrt(self.head_dim)
        return q, self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        o = self.head_norm(o.transpose(1, 2)).reshape(b, t, -1)
        return self.o_proj(o * F.silu(self.g_proj(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        o = chunked_retention(q, k, v, self.log_decay, self.chunk_size)
        return self._output(o, x)


def chunked_retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """q, k: (B, H, T, Dk); v: (B, H, T, Dv); log_decay: (H,). Returns (B, H, T, Dv)."""
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v))

    pos = torch.arange(c, device=q.device, dtype=log_decay.dtype)
    gap = pos[:, None] - pos[None, :]  # i - j
    ld = log_decay[:, None, None]  # (H, 1, 1)
    # Clamp before exp so future entries (gap < 0) cannot overflow; they are zeroed by the mask anyway.
    decay_mat = torch.exp(ld * gap.clamp(min=0)) * (gap >= 0)  # (H, C, C)
    intra = ((q @ k.transpose(-1, -2)) * decay_mat[:, None]) @ v

    q_decay = torch.exp(ld * (pos + 1)[:, None])[:, None]  # (H, 1, C, 1): chunk-start state -> position i
    k_decay = torch.exp(ld * (c - 1 - pos)[:, None])[:, None]  # (H, 1, C, 1): position j -> chunk end
    chunk_decay = torch.exp(log_decay * c)[:, None, None]  # (H, 1, 1)
    chunk_kv = (k * k_decay).transpose(-1, -2) @ v  # (B, H, N, Dk, Dv)

    state = q.new_zeros(b, h, k.shape[-1], v.shape[-1])
    states = []
    for i in range(n):
        states.append(state)
        state = state * chunk_decay + chunk_kv[:, :, i]
    inter = (q * q_decay) @ torch.stack(states, dim=2)
    return (intra + inter).reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token recurrence; slow and obvious, the fast form must match it."""
    q, k, v = mixer._project(x)
    b, h, t, dk = q.shape
    gamma = mixer.log_decay.exp()[:, None, None]
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        state = gamma * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append((q[:, :, i, :, None] * state).sum(-2))
    return mixer._output(torch.stack(outs, dim=2), x)
