"""DeltaNet (Schlag et al., 2021; chunked by Yang et al., 2024): linear attention with the delta rule.

Per head, with L2-normalised keys k_t and a write strength beta_t in (0, 1):

    S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})     (overwrite what k_t currently retrieves)
    o_t = q_t S_t

Chunked WY/UT form: inside a chunk of C tokens starting from state S0, the "new values"
u_t = beta_t (v_t - k_t S_{t-1}) satisfy the unit lower-triangular system

    (I + tril(diag(beta) K K^T, -1)) U = diag(beta) V - diag(beta) K S0,

so U = U_wy - W S0 with U_wy = A^{-1} diag(beta) V and W = A^{-1} diag(beta) K, solved for all chunks at
once. Then o = Q S0 + tril(Q K^T) U and the next state is S0 + K^T U; only that last step is sequential.
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
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.head_norm = nn.RMSNorm(self.head_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Unit-norm keys keep (I - beta k^T k) a contraction, which is what makes the delta rule stable.
        q = F.normalize(F.silu(self._heads(self.q_proj(x))), dim=-1) / math.sqrt(self.head_dim)
        k = F.normalize(F.silu(self._heads(self.k_proj(x))), dim=-1)
        v = self._heads(self.v_proj(x))
        beta = torch.sigmoid(self.b_proj(x)).transpose(1, 2)  # (B, H, T)
        return q, k, v, beta

    def _output(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.o_proj(self.head_norm(o.transpose(1, 2)).reshape(b, t, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, beta = self._project(x)
        o = chunked_delta_rule(q, k, v, beta, self.chunk_size)
        return self._output(o.to(x.dtype))


def chunked_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """q, k: (B, H, T, Dk); v: (B, H, T, Dv); beta: (B, H, T). Returns (B, H, T, Dv)."""
    # Triangular solves need at least fp32 (there is no bf16 kernel, and bf16 would be too coarse anyway).
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, v, beta = (z.to(dtype) for z in (q, k, v, beta))
    b, h, t, _ = q.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    # Padded tokens get beta = 0: they write nothing, so earlier outputs are untouched.
    q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    beta = F.pad(beta, (0, pad))
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, z.shape[-1]) for z in (q, k, v))
    beta = beta.reshape(b, h, n, c, 1)

    strict = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    eye = torch.eye(c, dtype=dtype, device=q.device)
    a = eye + ((beta * k) @ k.transpose(-1, -2)) * strict  # unit lower triangular, (B, H, N, C, C)
    w = torch.linalg.solve_triangular(a, beta * k, upper=False, unitriangular=True)
    u = torch.linalg.solve_triangular(a, beta * v, upper=False, unitriangular=True)
    scores = (q @ k.transpose(-1, -2)) * strict.logical_or(eye.bool())  # tril including the diagonal

    state = q.new_zeros(b, h, k.shape[-1], v.shape[-1])
    outs = []
    for i in range(n):
        u_i = u[:, :, i] - w[:, :, i] @ state
        outs.append(q[:, :, i] @ state + scores[:, :, i] @ u_i)
        state = state + k[:, :, i].transpose(-1, -2) @ u_i
    return torch.stack(outs, dim=2).reshape(b, h, n * c, -1)[:, :, :t]


def recurrent_reference(mixer: Mixer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token delta rule; slow and obvious, the fast form must match it."""
    q, k, v, beta = mixer._project(x)
    b, h, t, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        k_i, v_i, beta_i = k[:, :, i], v[:, :, i], beta[:, :, i, None]
        retrieved = (k_i[..., None] * state).sum(-2)  # k_t S_{t-1}, (B, H, Dv)
        state = state + k_i[..., None] * (beta_i * (v_i - retrieved))[..., None, :]
        outs.append((q[:, :, i, :, None] * state).sum(-2))
    return mixer._output(torch.stack(outs, dim=2).to(x.dtype))
