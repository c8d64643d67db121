"""The language model the trainer owns; candidates differ only in the token mixer (docs/architecture.md §3).

    tokens -> embedding -> N x [x + mixer(norm(x)); x + SwiGLU(norm(x))] -> norm -> tied LM head
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.mixer.loader import MixerFactory
from shared.mixer.profiles import Profile


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    mlp_ratio: float = 8 / 3  # SwiGLU with 8/3 keeps the MLP's params equal to a 4x GELU MLP
    mlp_multiple: int = 32  # hidden width rounded up to this, for friendlier GEMM shapes
    norm_eps: float = 1e-6
    init_std: float = 0.02
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def mlp_hidden(self) -> int:
        hidden = int(self.d_model * self.mlp_ratio)
        return self.mlp_multiple * math.ceil(hidden / self.mlp_multiple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


def model_config(profile: Profile, vocab_size: int | None = None, **mixer_kwargs: Any) -> ModelConfig:
    """The trainer's model at a profile's size, over the prepared tokenizer's vocabulary when it is known."""
    return ModelConfig(
        vocab_size=vocab_size or profile.vocab_size, d_model=profile.d_model, n_layers=profile.n_layers,
        n_heads=profile.n_heads, seq_len=profile.seq_len, mixer_kwargs=dict(mixer_kwargs),
    )


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)  # one GEMM for gate and up
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm residual block around any mixer built by `mixer_factory(d_model, n_heads)`."""

    def __init__(self, config: ModelConfig, mixer_factory: MixerFactory) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = mixer_factory(config.d_model, config.n_heads)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, mixer_factory: MixerFactory) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, mixer_factory) for _ in range(config.n_layers))
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self._init_owned_weights()

    def _init_owned_weights(self) -> None:
        """Initialise what the trainer owns; each mixer keeps its own initialisation."""
        std = self.config.init_std
        nn.init.normal_(self.embed.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.mlp.gate_up.weight, std=std)
            # Residual-branch outputs shrink with depth so the residual stream's variance stays O(1).
            nn.init.normal_(block.mlp.down.weight, std=std / math.sqrt(2 * self.config.n_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, vocab)."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.final_norm(x), self.embed.weight)  # tied LM head

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def mixer_parameters(self) -> int:
        return sum(p.numel() for block in self.blocks for p in block.mixer.parameters())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
