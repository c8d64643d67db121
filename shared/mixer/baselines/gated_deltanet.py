"""Gated DeltaNet (Yang et al., 2024): the delta rule plus a data-dependent scalar decay per head.

Per head, with L2-normalised keys, write strength beta_t in (0, 1) and decay alpha_t = exp(g_t) in (0, 1):

    S_t = alpha_t (S_{t-1} - beta_t k_t^T k_t S_{t-1}) + beta_t k_t^T v_t
    o_t = q_t S_t

followed by a per-head RMSNorm and a swish output gate. Chunked form: with b_i = sum_{s<=i} g_s inside a
chunk and Gamma[i, j] = exp(b_i - b_j), the new values u solve the unit lower-triangular system

    (I + tril(diag(beta) (K K^T * Gamma), -1)) U = diag(beta) V - diag(beta exp(b)) K S0,

then o = exp(b) * (Q S0) + (tril(Q K^T * Gamma)) U and S_next = exp(b_C) S0 + (K * exp(b_C - b))^T U.
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
        self.b_proj = nn.Linear(d_model, n_heads, bias=True)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.g_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.head_norm = nn.RMSNorm(self.head_dim)
        # Mamba2-style decay parameterisation: g = -exp(A_log) * softplus(a + dt_bias), rates spread over heads.
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, n_heads)))
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.logspace(-3, -1, n_heads))))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q = F.normalize(F.silu(self._heads(self.q_proj(x))), dim=-1) / math.sqrt(self.head_dim)
        k = F.normalize(F.silu(self._heads(self.k_proj(x))), dim=-1)
        v = self._heads(self.v_proj(x))
        beta = torch.sigmoid(self.b_proj(x)).transpose(1, 2)  # (B, H, T)
        gate_dtype = torch.promote_types(x.dtype, torch.float32)  # log-decays are summed: keep >= fp32
        g = -self.A_log.exp() * F.softplus(self.a_proj(x).to(gate_dtype) + self.dt_bias)
        return q, k, v, beta, g.transpose(1, 2)  # g: (B, H, T), log of the decay

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        o = self.head_norm(o.transpose(1, 2)).reshape(b, t, -1)
        return self.o_proj(o * F.silu(self.g_proj(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, beta, g = self._project(x)
        o = chunked_gated_delta_rule(q, k, v, beta, g, self.chunk_size)
        return self._output(o.to(x.dtype), x)


def chunked_gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """q, k: (B, H, T, Dk); v: (B, H, T, Dv); beta, g: (B, H, T). Returns (B, H, T, Dv)."""
    dtype = torch.promote_types(q.dtype, torch.float32)  # triangular solves need >= fp32
    q, k, v, beta, g = (z.to(dtype) for z in (q, k, v, beta, g))
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))  # padded tokens: no write, no decay
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v))
    beta = beta.reshape(b, h, n, c, 1)
    cum = g.reshape(b, h, n, c).cumsum(dim=-1)  # b_i

    future = torch.ones(c, c, dtype=torch.bool, device=q.device).triu(1)
    strict = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    # Mask the future to -inf before exp so no factor can overflow; every entry is in [0, 1].
    gamma = (cum[..., :, None] - cum[..., None, :]).masked_fill(future, float("-inf")).exp()
    eye = torch.eye(c, dtype=dtype, device=q.device)
    a = eye + ((beta * k) @ k.transpose(-1, -2)) * gamma * strict
    w = torch.linalg.solve_triangular(a, beta * k * cum[..., None].exp(), upper=False, unitriangular=True)
    u = torch.linalg.solve_triangular(a, beta * v, upper=False, unitriangular=True)
    scores = (q @ k.transpose(-1, -2)) * gamma  # gamma is already zero above the diagonal
    q_decayed = q * cum[..., None].exp()
    k_to_end = k * (cum[..., -1:] - cum)[..., None].exp()

    state = q.new_zeros(b, h, k.shape[-1], v.shape[-1])
    outs = []
    for i in range(n):
        u_i = u[:, :, i] - w[:, :, i] @ state
        outs.append(q_decayed[:, :, i] @ state + scores[:, :, i] @ u_i)
        state = state * cum[:, :, i, -1, None, None].exp() + k_to_end[:, :, i].transpose(-1, -2) @ u_i
    return torch.stack(outs, dim=2).reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token gated delta rule; slow and obvious, the fast form must match it."""
    q, k, v, beta, g = mixer._project(x)
    b, h, t, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        k_i, v_i, beta_i = k[:, :, i], v[:, :, i], beta[:, :, i, None]
        state = g[:, :, i, None, None].exp() * state
        retrieved = (k_i[..., None] * state).sum(-2)
        state = state + k_i[..., None] * (beta_i * (v_i - retrieved))[..., None, :]
        outs.append((q[:, :, i, :, None] * state).sum(-2))
    return mixer._output(torch.stack(outs, dim=2).to(x.dtype), x)
