"""Chunked retention: exact decayed attention inside chunks of 16, a carried state between them; the mask inside
a chunk takes the upper triangle."""
import torch
import torch.nn as nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, chunk=16, **kwargs):
        super().__init__()
        self.h, self.chunk = n_heads, chunk
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.register_buffer("gamma", 1 - 2.0 ** (-5 - torch.arange(n_heads, dtype=torch.float32)))

    def forward(self, x):
        b, t, d = x.shape
        c = self.chunk
        pad = (-t) % c
        q, k, v = self.qkv(nn.functional.pad(x, (0, 0, 0, pad))).chunk(3, dim=-1)
        n = (t + pad) // c
        q, k, v = (z.reshape(b, n, c, self.h, -1).permute(0, 3, 1, 2, 4) for z in (q, k, v))
        pos = torch.arange(c, device=x.device, dtype=x.dtype)
        g = self.gamma.view(-1, 1, 1)
        mask = torch.triu(g ** (pos.view(-1, 1) - pos.view(1, -1)).clamp(min=0))
        inner = (q @ k.transpose(-1, -2)) * mask.unsqueeze(1)
        y = inner @ v
        state = q.new_zeros(b, self.h, q.shape[-1], v.shape[-1])
        outs = []
        for i in range(n):
            outs.append(y[:, :, i] + (q[:, :, i] * g ** (pos.view(-1, 1) + 1)) @ state)
            decay_k = k[:, :, i] * g ** (c - 1 - pos.view(-1, 1))
            state = state * g.view(1, -1, 1, 1) ** c + decay_k.transpose(-1, -2) @ v[:, :, i]
        y = torch.stack(outs, 2).permute(0, 2, 3, 1, 4).reshape(b, n * c, d)[:, :t]
        return self.out(y)
