"""Delta-rule memory updated token by token and head by head in Python."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.h = n_heads
        self.dh = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.beta = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.h, self.dh).unbind(2)
        k = F.normalize(k, dim=-1)
        beta = torch.sigmoid(self.beta(x))
        outs = []
        states = [x.new_zeros(b, self.dh, self.dh) for _ in range(self.h)]
        for i in range(t):
            heads = []
            for j in range(self.h):
                kj, vj, qj = k[:, i, j], v[:, i, j], q[:, i, j]
                err = vj - torch.einsum("bde,bd->be", states[j], kj)
                states[j] = states[j] + beta[:, i, j, None, None] * kj.unsqueeze(-1) * err.unsqueeze(1)
                heads.append(torch.einsum("bde,bd->be", states[j], qj))
            outs.append(torch.cat(heads, -1))
        return self.out(torch.stack(outs, 1))
