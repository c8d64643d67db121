"""Linear attention (Katharopoulos et al., 2020) with the elu+1 feature map.

Per head, with phi(x) = elu(x) + 1 (strictly positive, so the normaliser never changes sign):

    S_t = S_{t-1} + phi(k_t)^T v_t            state, d_k x d_v
    z_t = z_{t-1} + phi(k_t)                  normaliser, d_k
    o_t = phi(q_t) S_t / (phi(q_t) . z_t)

There is no decay and no position signal: the output is a normalised average over the whole prefix, so
this mixer is weak at local patterns (the gated/decaying baselines fix exactly that). It is the cheapest
mixer here, which makes it the reference for the efficiency check.

The fast form splits the sequence into chunks of C tokens: inside a chunk it uses the masked C x C
attention matrix, across chunks it carries the state S. Cost is O(T C d + T d^2), linear in T.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, chunk_size: int = 64, eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.chunk_size = chunk_size
        self.eps = eps
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (self._heads(z) for z in self.qkv_proj(x).chunk(3, dim=-1))
        return F.elu(q) + 1.0, F.elu(k) + 1.0, v

    def _output(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        o = chunked_linear_attention(q, k, v, self.chunk_size, self.eps)
        return self._output(o)


def chunked_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, eps: float
) -> torch.Tensor:
    """q, k: (B, H, T, Dk) already feature-mapped; v: (B, H, T, Dv). Returns (B, H, T, Dv)."""
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    # Zero padding at the end is harmless: padded keys/values only feed padded (discarded) outputs.
    q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v))

    # Appending a ones column to v makes the normaliser ride along with the numerator.
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    intra = ((q @ k.transpose(-1, -2)) * causal) @ v1  # (B, H, N, C, Dv+1)

    # Without decay the state entering chunk n is the exclusive prefix sum of the per-chunk k^T v.
    chunk_kv = k.transpose(-1, -2) @ v1  # (B, H, N, Dk, Dv+1)
    states = chunk_kv.cumsum(dim=2) - chunk_kv
    inter = q @ states

    out = intra + inter
    o = out[..., :-1] / (out[..., -1:] + eps)
    return o.reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token recurrence; slow and obvious, the fast form must match it."""
    q, k, v = mixer._project(x)
    b, h, t, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    norm = q.new_zeros(b, h, dk)
    outs = []
    for i in range(t):
        state = state + k[:, :, i, :, None] * v[:, :, i, None, :]
        norm = norm + k[:, :, i]
        num = (q[:, :, i, :, None] * state).sum(-2)
        den = (q[:, :, i] * norm).sum(-1, keepdim=True)
        outs.append(num / (den + mixer.eps))
    return mixer._output(torch.stack(outs, dim=2))
