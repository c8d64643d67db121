"""Train one language model around a mixer: AdamW, WSD schedule, clipping, autocast, checkpoints, TensorBoard.

`train` reads like a training script, top to bottom. Runs that go wrong stop with a `TrainingStopped`
carrying an error kind (`nan`, `efficiency`, `timeout`, `memory`, `runtime`) and the partial result,
so the loss curve is kept either way.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.engineer.result import TrainMetrics
from shared.events import CurvePoint
from shared.mixer.contract import CheckFailed, failure_kind
from shared.mixer.loader import MixerFactory
from shared.mixer.model import LanguageModel, ModelConfig, count_parameters, model_config
from shared.mixer.profiles import Profile

# ───────────────────────────── results and progress ─────────────────────────────


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    tokens: int
    loss: float
    lr: float
    tok_per_s: float
    elapsed_s: float
    eta_s: float


class TrainingStopped(CheckFailed):
    """The run was stopped; `result` holds what was measured up to that point."""

    def __init__(self, kind: str, message: str, result: TrainMetrics) -> None:
        super().__init__(kind, message)
        self.result = result


ProgressCallback = Callable[[Progress], None]
EvaluateCallback = Callable[[LanguageModel], dict[str, float]]

# ───────────────────────────── helpers ─────────────────────────────


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_for(device: torch.device, profile: Profile) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA; on CPU only when the run says so (``cpu_bf16``: see services.engineer.precision)."""
    if precision_of(device, profile) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def precision_of(device: torch.device, profile: Profile) -> str:
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and profile.cpu_bf16) else "fp32"


def lr_at(step: int, profile: Profile) -> float:
    """Warm-up (linear) → stable → decay (linear to min_lr_ratio over the last decay_frac of steps)."""
    total = profile.total_steps
    if step < profile.warmup_steps:
        return profile.lr * (step + 1) / profile.warmup_steps
    decay_start = int(total * (1 - profile.decay_frac))
    if step < decay_start:
        return profile.lr
    frac = min(1.0, (step - decay_start) / max(1, total - 1 - decay_start))  # reaches the floor at the last step
    return profile.lr * (1 - frac * (1 - profile.min_lr_ratio))


class BatchSampler:
    """Random contiguous windows from a token array (works on np.memmap without loading it)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        if len(tokens) < seq_len + 2:
            raise ValueError(f"token array of length {len(tokens)} is shorter than seq_len + 2 = {seq_len + 2}")
        self.tokens, self.seq_len = tokens, seq_len
        self.rng = np.random.default_rng(seed)

    def next(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.rng.integers(0, len(self.tokens) - self.seq_len - 1, size=batch)
        return windows(self.tokens, starts, self.seq_len, device)


def windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    rows = np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts])
    data = torch.from_numpy(rows).to(device)
    return data[:, :-1], data[:, 1:]


@torch.no_grad()
def validation_loss(model: LanguageModel, val: np.ndarray, profile: Profile, device: torch.device) -> float:
    """Mean loss over fixed, evenly spaced windows of the held-out split (same windows every call)."""
    n_windows = profile.val_batches * profile.micro_batch_size
    last_start = len(val) - profile.seq_len - 1
    if last_start < 0:
        raise ValueError(f"validation split has {len(val)} tokens, fewer than seq_len + 1 = {profile.seq_len + 1}")
    starts = np.linspace(0, last_start, num=n_windows).astype(np.int64)
    model.eval()
    losses = []
    for i in range(0, n_windows, profile.micro_batch_size):
        x, y = windows(val, starts[i : i + profile.micro_batch_size], profile.seq_len, device)
        with autocast_for(device, profile):
            losses.append(model.loss(x, y).item())
    model.train()
    return float(np.mean(losses))


def synthetic_tokens(n_tokens: int, seed: int = 0) -> np.ndarray:
    """Deterministic byte-level text with real structure (grammar, agreement, arithmetic); vocab 256.

    For tests and benchmarks where no prepared corpus exists: a model that learns it drops well below
    the byte-unigram entropy.
    """
    rng = random.Random(seed)
    nouns = ["cat", "dog", "bird", "child", "teacher", "farmer", "river", "machine", "garden", "king"]
    verbs = ["sees", "likes", "follows", "finds", "carries", "watches", "helps", "builds"]
    adjs = ["small", "red", "quiet", "old", "bright", "heavy", "happy", "strange"]
    places = ["in the house", "by the sea", "under the tree", "near the road", "on the hill"]
    parts: list[str] = []
    size = 0
    while size < n_tokens:
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        kind = rng.random()
        if kind < 0.6:
            s = f"the {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)} "
            s += f"{rng.choice(places)}. "
        elif kind < 0.8:
            s = f"{a} plus {b} is {a + b}. "
        else:
            noun = rng.choice(nouns)
            s = f"one {noun}, two {noun}s, three {noun}s. "
        parts.append(s)
        size += len(s)
    data = np.frombuffer("".join(parts).encode("ascii"), dtype=np.uint8)[:n_tokens]
    return data.astype(np.uint16)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequency distribution: the loss of the best context-free model."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def load_checkpoint(path: str | Path, mixer_factory: MixerFactory) -> tuple[LanguageModel, dict[str, Any]]:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = LanguageModel(ModelConfig.from_dict(payload["model_config"]), mixer_factory)
    model.load_state_dict(payload["state_dict"])
    return model, payload


# ───────────────────────────── one optimiser step ─────────────────────────────


def train_step(
    model: LanguageModel, optimizer: torch.optim.Optimizer, sampler: BatchSampler, profile: Profile,
    device: torch.device, lr: float,
) -> tuple[float, float]:
    """Accumulate micro-batches, clip, step. Returns (loss, grad norm); non-finite values are returned as is."""
    accum = max(1, profile.batch_size // profile.micro_batch_size)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(accum):
        x, y = sampler.next(profile.micro_batch_size, device)
        with autocast_for(device, profile):
            loss = model.loss(x, y) / accum
        loss.backward()
        total += loss.item()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), profile.grad_clip))
    if math.isfinite(total) and math.isfinite(grad_norm):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    return total, grad_norm


def make_optimizer(model: LanguageModel, profile: Profile, device: torch.device) -> torch.optim.Optimizer:
    # No weight decay on norms, biases, gains and other vectors; decay on matrices and embeddings.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": profile.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=profile.lr, betas=profile.betas, fused=device.type == "cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepTimes:
    """Median optimiser-step times of a candidate and a reference, measured side by side."""

    candidate_s: float
    reference_s: float
    clock: str  # what was measured: "CPU time" (on a CPU) or "wall time" (on a GPU, synchronised)
    pairs: int

    @property
    def ratio(self) -> float:
        return self.candidate_s / max(self.reference_s, 1e-12)


def compare_step_times(
    candidate: MixerFactory, reference: MixerFactory, profile: Profile, vocab_size: int, device: str | None = None,
    pairs: int = 3,
) -> StepTimes:
    """Both models' optimiser steps on random tokens, interleaved one by one in this process, so that whatever load
    the machine carries falls on both alike. On a CPU the process's CPU time is measured (time spent waiting for a
    core does not count); on a GPU the synchronised wall time. The order alternates each round, so a drift in load
    does not favour either."""
    dev = pick_device(device)
    reference_s, candidate_s = interleaved_step_times([(reference, profile), (candidate, profile)], vocab_size, dev,
                                                      pairs)
    return StepTimes(candidate_s=candidate_s, reference_s=reference_s, clock=clock_of(dev)[1], pairs=pairs)


def clock_of(device: torch.device) -> tuple[Callable[[], float], str]:
    return (time.perf_counter, "wall time") if device.type == "cuda" else (time.process_time, "CPU time")


def interleaved_step_times(setups: list[tuple[MixerFactory, Profile]], vocab_size: int, device: torch.device,
                           pairs: int) -> list[float]:
    """The median optimiser-step time of each (mixer, profile) setup, their steps interleaved round by round (the
    order reversed every other round) after the first setup's profile's warm-up steps."""
    clock = clock_of(device)[0]
    runs = []
    for factory, profile in setups:
        seed_everything(profile.seed)
        model = LanguageModel(model_config(profile, vocab_size), factory).to(device)
        tokens = np.random.default_rng(0).integers(0, vocab_size, size=profile.seq_len * 64, dtype=np.int64)
        runs.append((model, make_optimizer(model, profile, device), BatchSampler(tokens, profile.seq_len, seed=0),
                     profile))
    warmup = setups[0][1].efficiency_warmup_steps
    times: list[list[float]] = [[] for _ in runs]
    for round_ in range(warmup + pairs):
        order = range(len(runs)) if round_ % 2 == 0 else reversed(range(len(runs)))
        for which in order:
            model, optimizer, sampler, profile = runs[which]
            start = clock()
            train_step(model, optimizer, sampler, profile, device, profile.lr)
            _sync(device)
            if round_ >= warmup:
                times[which].append(clock() - start)
    return [statistics.median(t) for t in times]


# ───────────────────────────── the training run ─────────────────────────────


def train(
    mixer_factory: MixerFactory,
    profile: Profile,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    vocab_size: int,
    run_dir: str | Path,
    *,
    device: str | None = None,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    evaluate: EvaluateCallback | None = None,
    flags: dict[str, Any] | None = None,
    tensorboard: bool = True,
) -> TrainMetrics:
    """Train for profile.total_steps; raises TrainingStopped (with the partial result) when a run goes wrong."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    if threads:
        torch.set_num_threads(threads)

    # ── model, optimiser, data ──
    seed_everything(profile.seed)
    config = model_config(profile, vocab_size)
    model = LanguageModel(config, mixer_factory).to(dev)
    optimizer = make_optimizer(model, profile, dev)
    sampler = BatchSampler(train_tokens, profile.seq_len, seed=profile.seed)
    total_steps = profile.total_steps
    result = TrainMetrics(params=count_parameters(model), mixer_params=model.mixer_parameters(), device=str(dev),
                          precision=precision_of(dev, profile))
    writer = _summary_writer(run_dir) if tensorboard else None
    log_every = max(1, total_steps // 100)
    step_times: list[float] = []
    recent_losses: list[float] = []

    # ── loop ──
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    try:
        for step in range(total_steps):
            step_start = time.perf_counter()
            lr = lr_at(step, profile)
            loss, grad_norm = _guarded_step(model, optimizer, sampler, profile, dev, lr, result)
            _sync(dev)
            step_times.append(time.perf_counter() - step_start)
            result.steps, result.tokens = step + 1, (step + 1) * profile.tokens_per_step
            recent_losses = [*recent_losses[-9:], loss]
            if step % log_every == 0 or step == total_steps - 1 or not math.isfinite(loss):
                result.curve.append(CurvePoint(step=step + 1, tokens=result.tokens, loss=loss))
                if writer is not None:
                    writer.add_scalar("train/loss", loss, step + 1)
                    writer.add_scalar("train/lr", lr, step + 1)
                    writer.add_scalar("train/grad_norm", grad_norm, step + 1)
            _update_timing(result, wall_start, cpu_start, dev)
            _stop_if_bad(loss, grad_norm, step_times, profile, result)
            if progress is not None:
                elapsed = time.perf_counter() - wall_start
                eta = elapsed / (step + 1) * (total_steps - step - 1)
                progress(Progress(step + 1, total_steps, result.tokens, loss, lr, result.tok_per_s, elapsed, eta))
            if profile.eval_every and (step + 1) % profile.eval_every == 0 and step + 1 < total_steps:
                _log_val(model, val_tokens, profile, dev, writer, step + 1)
    finally:
        if writer is not None:
            writer.flush()

    # ── final evaluation and checkpoint ──
    result.final_train_loss = float(np.mean(recent_losses))
    result.final_val_loss = _log_val(model, val_tokens, profile, dev, writer, total_steps)
    result.eval_scores = {"val_loss": result.final_val_loss, "val_ppl": math.exp(min(result.final_val_loss, 50.0))}
    if evaluate is not None:
        model.eval()
        with torch.no_grad():
            result.eval_scores.update(evaluate(model))
        model.train()
    result.checkpoint_path = str(_save_checkpoint(run_dir, model, config, profile, flags, result))
    if writer is not None:
        for name, value in result.eval_scores.items():
            writer.add_scalar(f"eval/{name}", value, total_steps)
        writer.close()
    return result


def _guarded_step(
    model: LanguageModel, optimizer: torch.optim.Optimizer, sampler: BatchSampler, profile: Profile,
    device: torch.device, lr: float, result: TrainMetrics,
) -> tuple[float, float]:
    """One step, with crashes turned into error kinds (`memory` for OOM, `runtime` for anything else)."""
    try:
        return train_step(model, optimizer, sampler, profile, device, lr)
    except Exception as exc:  # the candidate's error (or a refused allocation): its traceback is the cause
        raise TrainingStopped(failure_kind(exc), f"step {result.steps + 1} raised {exc!r}", result) from exc


def _update_timing(result: TrainMetrics, wall_start: float, cpu_start: float, device: torch.device) -> None:
    result.wall_seconds = time.perf_counter() - wall_start
    result.cpu_core_seconds = time.process_time() - cpu_start
    result.gpu_seconds = result.wall_seconds if device.type == "cuda" else 0.0
    result.tok_per_s = result.tokens / max(result.wall_seconds, 1e-9)


def _stop_if_bad(
    loss: float, grad_norm: float, step_times: list[float], profile: Profile, result: TrainMetrics,
) -> None:
    step = result.steps
    if not math.isfinite(loss):
        raise TrainingStopped("nan", f"loss became {loss} at step {step}", result)
    if not math.isfinite(grad_norm):
        raise TrainingStopped("nan", f"gradient norm became {grad_norm} at step {step} (loss {loss:.4f})", result)
    timed = step_times[profile.efficiency_warmup_steps :]
    if timed:
        result.step_seconds = statistics.median(timed)
    if profile.max_train_seconds and result.wall_seconds > profile.max_train_seconds:
        raise TrainingStopped(
            "timeout", f"training ran {result.wall_seconds:.0f}s > limit {profile.max_train_seconds:.0f}s", result
        )


def _log_val(
    model: LanguageModel, val: np.ndarray, profile: Profile, device: torch.device, writer: Any, step: int
) -> float:
    loss = validation_loss(model, val, profile, device)
    if writer is not None:
        writer.add_scalar("val/loss", loss, step)
    return loss


def _summary_writer(run_dir: Path) -> Any:
    # Imported lazily: tensorboard's import costs ~1 s, which checks and tests need not pay.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _save_checkpoint(
    run_dir: Path, model: LanguageModel, config: ModelConfig, profile: Profile, flags: dict[str, Any] | None,
    result: TrainMetrics,
) -> Path:
    path = run_dir / "checkpoint.pt"
    payload = {
        "model_config": config.to_dict(),
        "profile": profile.to_dict(),
        "flags": dict(flags or {}),
        "steps": result.steps,
        "tokens": result.tokens,
        "final_val_loss": result.final_val_loss,
        "state_dict": model.state_dict(),
    }
    torch.save(payload, path)
    return path
