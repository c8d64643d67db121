"""A Mamba2-like SSD mixer (Dao & Gu, 2024): a selective state space with a scalar decay per head.

Inputs pass through a short causal depthwise convolution, then per head h with step size dt_t > 0:

    S_t = exp(-exp(A_log_h) dt_t) S_{t-1} + (dt_t B_t)^T x_t       state, d_state x head_dim
    y_t = C_t S_t + D_h x_t

B_t and C_t (d_state) are shared by all heads (one group). In attention terms q = C, k = dt B, v = x and the
decay is a scalar per head and token, so the chunked form needs only a (C, C) decay matrix per head:
L[i, j] = exp(b_i - b_j) for j <= i, with b the cumulative log-decay inside the chunk. The output is
gated by silu(z), normalised, and projected back.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, chunk_size: int = 64, d_state: int = 32, conv_size: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.chunk_size = chunk_size
        self.d_state = d_state
        conv_channels = d_model + 2 * d_state  # x, B and C are convolved together
        self.in_proj = nn.Linear(d_model, d_model + conv_channels + n_heads, bias=False)
        # Depthwise conv with left padding (conv_size - 1) and the tail cut off: causal by construction.
        self.conv = nn.Conv1d(conv_channels, conv_channels, conv_size, groups=conv_channels, padding=conv_size - 1)
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, n_heads)))
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.logspace(-3, -1, n_heads))))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm = nn.RMSNorm(d_model)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bsz, t, d = x.shape
        z, xbc, dt = self.in_proj(x).split([d, d + 2 * self.d_state, self.n_heads], dim=-1)
        xbc = F.silu(self.conv(xbc.transpose(1, 2))[..., :t].transpose(1, 2))
        xs, b_in, c_in = xbc.split([d, self.d_state, self.d_state], dim=-1)
        gate_dtype = torch.promote_types(x.dtype, torch.float32)  # log-decays are summed: keep >= fp32
        dt = F.softplus(dt.to(gate_dtype) + self.dt_bias).transpose(1, 2)  # (B, H, T)
        g = -self.A_log.exp()[:, None] * dt  # log of the decay, (B, H, T)
        v = xs.view(bsz, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, P)
        q = c_in[:, None].expand(bsz, self.n_heads, t, self.d_state)
        k = b_in[:, None] * dt[..., None]  # (B, H, T, N)
        return q, k, v, g, z

    def _output(self, y: torch.Tensor, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + self.D[:, None, None] * v  # skip connection D x_t
        b, _, t, _ = y.shape
        y = y.transpose(1, 2).reshape(b, t, -1).to(z.dtype)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, g, z = self._project(x)
        return self._output(chunked_ssd(q, k, v, g, self.chunk_size), v, z)


def chunked_ssd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """q, k: (B, H, T, N); v: (B, H, T, P); g: (B, H, T) log-decays. Returns (B, H, T, P)."""
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    g = F.pad(g, (0, pad))
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v))
    cum = g.reshape(b, h, n, c).cumsum(dim=-1)  # b_i

    future = torch.ones(c, c, dtype=torch.bool, device=q.device).triu(1)
    # Future masked to -inf before exp: every decay factor is in [0, 1], none can overflow.
    decay = (cum[..., :, None] - cum[..., None, :]).masked_fill(future, float("-inf")).exp()
    intra = ((q @ k.transpose(-1, -2)) * decay) @ v

    last = cum[..., -1:]  # (B, H, N, 1)
    chunk_kv = (k * (last - cum)[..., None].exp()).transpose(-1, -2) @ v  # (B, H, N, N_state, P)
    state = q.new_zeros(b, h, k.shape[-1], v.shape[-1])
    states = []
    for i in range(n):
        states.append(state)
        state = state * last[:, :, i, :, None].exp() + chunk_kv[:, :, i]
    inter = (q * cum[..., None].exp()) @ torch.stack(states, dim=2)
    return (intra + inter).reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token state space recurrence; slow and obvious, the fast form must match it."""
    q, k, v, g, z = mixer._project(x)
    b, h, t, n_state = q.shape
    state = q.new_zeros(b, h, n_state, v.shape[-1], dtype=g.dtype)
    outs = []
    for i in range(t):
        state = g[:, :, i, None, None].exp() * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append((q[:, :, i, :, None] * state).sum(-2))
    return mixer._output(torch.stack(outs, dim=2), v, z)
