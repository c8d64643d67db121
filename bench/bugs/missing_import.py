"""Gated linear attention whose score scale uses `math`, never imported."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.gate = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        q = F.elu(q.reshape(b, t, self.n_heads, self.head_dim)) + 1
        k = F.elu(k.reshape(b, t, self.n_heads, self.head_dim)) + 1
        v = v.reshape(b, t, self.n_heads, self.head_dim)
        kv = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=1)
        z = torch.cumsum(k, dim=1)
        num = torch.einsum("bthd,bthde->bthe", q, kv)
        den = (q * z).sum(-1, keepdim=True) * math.sqrt(self.head_dim)
        y = (num / (den + 1e-6)).reshape(b, t, -1)
        return self.out(y * torch.sigmoid(self.gate(x)))
