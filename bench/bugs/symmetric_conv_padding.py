"""A short depthwise convolution in front of a gated cumulative state; the convolution is padded on both sides."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, kernel=4, **kwargs):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, padding=kernel // 2)
        self.gate = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x):
        t = x.shape[1]
        u = F.silu(self.conv(x.transpose(1, 2))[..., :t]).transpose(1, 2)
        g = torch.sigmoid(self.gate(x))
        counts = torch.arange(1, t + 1, device=x.device, dtype=x.dtype).view(1, t, 1)
        return self.out(torch.cumsum(g * u, dim=1) / counts)
