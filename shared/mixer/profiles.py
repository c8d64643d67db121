"""Training profiles (docs/architecture.md §5): model size, token budget, optimiser and check settings in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    # model
    vocab_size: int  # expected tokenizer vocabulary (byte-level BPE for small profiles, GPT-NeoX for big ones)
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    # token budget and batch: one optimiser step sees batch_size x seq_len tokens
    tokens: int
    batch_size: int
    micro_batch_size: int  # sequences per forward; batch_size / micro_batch_size steps are accumulated
    # optimiser: AdamW, linear warm-up, stable, then linear decay over the last `decay_frac` (WSD)
    lr: float
    warmup_steps: int
    decay_frac: float = 0.2
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    # evaluation
    eval_every: int = 0  # 0: only at the end
    val_batches: int = 8
    eval_samples_per_task: int | None = 100  # None: the whole task
    # Synthetic tasks (MQAR, MAD): each trains a fresh 2-layer model with the candidate mixer for this many steps.
    synthetic_tasks: tuple[str, ...] = ("mqar",)
    synthetic_steps: int = 0  # 0: skip them
    # checks
    param_range: tuple[int, int] = (0, 10**12)  # total model params (the `params` check)
    # A training step may take at most k x the slowest built-in baseline's, timed side by side (the efficiency gate).
    efficiency_k: float = 3.0
    efficiency_warmup_steps: int = 3  # steps ignored before timing (allocator and kernel warm-up)
    max_train_seconds: float | None = None  # wall-time limit -> `timeout`
    # No module forward (in the checks, a step, the evaluation) for this long -> `timeout`: a hang shows in seconds.
    stall_seconds: float = 120.0
    # In the registry: whether runs at this profile may train under bf16 autocast on a CPU measured to gain from
    # it (services.engineer.precision; only where measured not to hurt loss). In a run: whether this one does.
    cpu_bf16: bool = False
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens // self.tokens_per_step)

    def with_overrides(self, **changes: Any) -> Profile:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALL_SYNTHETIC = ("mqar", "in_context_recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression",
                 "memorization")

PROFILES: dict[str, Profile] = {
    # ~0.9 M params on bytes; 0.2 M tokens. Seconds on 2 cores.
    "smoke": Profile(
        name="smoke", vocab_size=256, d_model=128, n_layers=4, n_heads=4, seq_len=128,
        tokens=200_000, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=10,
        val_batches=4, eval_samples_per_task=20, param_range=(300_000, 3_000_000), max_train_seconds=600,
        synthetic_tasks=("mqar",), synthetic_steps=60, stall_seconds=30,
    ),
    # ~3.3 M params (1.6 M of them the tied 8 k embedding); 2 M tokens. bf16 autocast where the CPU gains from it:
    # over the whole run on 2 seeds (bench/precision.py, deltanet) val loss 5.1887 ± 0.0240 against fp32's
    # 5.2016 ± 0.0024, within seed noise, at 1.55x the tokens/s.
    "cpu": Profile(
        name="cpu", vocab_size=8192, d_model=192, n_layers=4, n_heads=4, seq_len=256,
        tokens=2_000_000, batch_size=16, micro_batch_size=16, lr=2e-3, warmup_steps=50,
        val_batches=16, eval_samples_per_task=200, param_range=(2_000_000, 8_000_000), max_train_seconds=3600,
        synthetic_tasks=ALL_SYNTHETIC, synthetic_steps=200, stall_seconds=90, cpu_bf16=True,
    ),
    # The paper's exploration stage: ~20 M params (8 x 256, GPT-NeoX vocab), seq 2048, 1 B tokens.
    "explore": Profile(
        name="explore", vocab_size=50_280, d_model=256, n_layers=8, n_heads=4, seq_len=2048,
        tokens=1_000_000_000, batch_size=128, micro_batch_size=32, lr=3e-3, warmup_steps=500,
        eval_every=1000, val_batches=64, eval_samples_per_task=1000, param_range=(12_000_000, 30_000_000),
        synthetic_tasks=ALL_SYNTHETIC, synthetic_steps=1000, stall_seconds=300,
    ),
    # The paper's verification stage: ~340 M params (24 x 1024), seq 2048, 1 B+ tokens.
    "verify": Profile(
        name="verify", vocab_size=50_280, d_model=1024, n_layers=24, n_heads=8, seq_len=2048,
        tokens=1_000_000_000, batch_size=256, micro_batch_size=8, lr=1e-3, warmup_steps=1000,
        eval_every=2000, val_batches=128, eval_samples_per_task=None, param_range=(250_000_000, 450_000_000),
        synthetic_tasks=ALL_SYNTHETIC, synthetic_steps=2000, stall_seconds=600,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


def profile_seed(name: str) -> int:
    """The seed a profile trains on unless told otherwise (a replicate is told another); 0 for a name not known
    here (a profile of a newer version)."""
    return PROFILES[name].seed if name in PROFILES else 0
