"""Data-dependent decay written as the exponential of an unbounded cumulative log-rate."""
import torch
import torch.nn as nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.rate = nn.Linear(d_model, d_model)
        self.inp = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x):
        log_rate = self.rate(x)
        cum = torch.cumsum(log_rate, dim=1)
        decay = torch.exp(cum)
        y = torch.cumsum(self.inp(x) / decay, dim=1) * decay
        return self.out(y / x.shape[1])
