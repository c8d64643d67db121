"""Retention-style decayed sum with a learned gate; forward calls the output projection by a name never defined."""
import torch
import torch.nn as nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.value_proj = nn.Linear(d_model, d_model)
        self.gate_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.log_decay = nn.Parameter(torch.linspace(-4.0, -1.0, d_model))

    def forward(self, x):
        t = x.shape[1]
        decay = -torch.exp(self.log_decay)  # per-channel log-decay, always negative
        pos = torch.arange(t, device=x.device, dtype=x.dtype).view(1, t, 1)
        scaled = self.value_proj(x) * torch.exp(-decay * pos).clamp(max=1e4)
        y = torch.cumsum(scaled, dim=1) * torch.exp(decay * pos)
        return self.output_proj(y * torch.sigmoid(self.gate_proj(x)))
