"""Training throughput of the linear-attention baseline at a profile, as a fraction of this machine's GEMM peak.

    python bench/train_throughput.py [--profile cpu] [--steps 10] [--threads N] [--mixer NAME] [--cpu-bf16]
                                     [--compile]

Achieved FLOP/s = (FLOPs of one optimiser step, counted by torch.utils.flop_counter: matmuls forward and
backward) / (median measured step time). The peak is the best of a few large square matmuls measured in the
same process, same dtype, same thread count. Beside it, the ceiling of this model's own matmuls: every matmul
one step runs is recorded with its shapes and timed alone (on contiguous operands, caches warm), so the step's
GEMM time at the best speed those shapes reach is known; the step's time beyond it goes to everything else
(softmax, casts, elementwise ops, the optimiser) or is lost inside its matmuls. ``--compile`` runs the model's
loss through torch.compile (its warm-up is printed).
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from services.engineer.trainer import (
    BatchSampler,
    make_optimizer,
    pick_device,
    seed_everything,
    train_step,
)
from shared.mixer.baselines import load_baseline
from shared.mixer.model import LanguageModel, count_parameters, model_config
from shared.mixer.profiles import get_profile


def best_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run``, after one that warms up."""
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / best_seconds(lambda: a @ b, device, repeats)


GEMM_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default}


class GemmRecorder(TorchDispatchMode):
    """Counts every matmul run under it by (op, argument shapes, dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in GEMM_OPS:
            tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
            key = (func, tuple(tuple(t.shape) for t in tensors), tensors[0].dtype)
            self.calls[key] = self.calls.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def gemm_seconds(calls: dict[tuple, int], device: torch.device, repeats: int = 20) -> float:
    """The time the recorded matmuls take when each shape runs alone on contiguous operands, best of ``repeats``,
    summed over calls: a floor (in the step, operands are often transposed views and the caches cold)."""
    total = 0.0
    for (func, shapes, dtype), count in calls.items():
        operands = [torch.randn(shape, device=device, dtype=dtype) for shape in shapes]
        total += best_seconds(lambda: func(*operands), device, repeats) * count  # noqa: B023 (called at once)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--mixer", default="linear_attention")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU (profile.cpu_bf16)")
    parser.add_argument("--compile", action="store_true", help="the model's loss through torch.compile")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    if args.cpu_bf16:
        profile = profile.with_overrides(cpu_bf16=True)
    device = pick_device()
    seed_everything(0)
    module = load_baseline(args.mixer)
    model = LanguageModel(model_config(profile), lambda d, h: module.Mixer(d, h)).to(device)
    optimizer = make_optimizer(model, profile, device)
    tokens = np.random.default_rng(0).integers(0, profile.vocab_size, size=profile.seq_len * 256, dtype=np.int64)
    sampler = BatchSampler(tokens, profile.seq_len, seed=0)

    counter, recorder = FlopCounterMode(display=False), GemmRecorder()
    with counter, recorder:
        train_step(model, optimizer, sampler, profile, device, profile.lr)
    flops_per_step = counter.get_total_flops()
    warm_up_s = 0.0
    if args.compile:
        model.loss = torch.compile(model.loss)  # type: ignore[method-assign]
        start = time.perf_counter()
        train_step(model, optimizer, sampler, profile, device, profile.lr)  # compiles forward and backward
        warm_up_s = time.perf_counter() - start

    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        train_step(model, optimizer, sampler, profile, device, profile.lr)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)

    # Peak in the dtype the step's GEMMs ran in: bf16 under autocast, fp32 otherwise.
    dtype = torch.bfloat16 if device.type == "cuda" or profile.cpu_bf16 else torch.float32
    peak = gemm_peak(device, dtype)
    achieved = flops_per_step / step_s
    own_gemm_s = gemm_seconds(recorder.calls, device)
    compiled = f" compiled (warm-up {warm_up_s:.1f} s)" if args.compile else ""
    print(f"profile={profile.name} mixer={args.mixer} device={device} threads={args.threads} dtype={dtype}{compiled}")
    print(f"params={count_parameters(model):,} tokens/step={profile.tokens_per_step:,} steps={args.steps}")
    print(f"step_s(median)={step_s:.3f} tok/s={profile.tokens_per_step / step_s:,.0f}")
    print(f"train FLOP/step={flops_per_step:.3e} achieved={achieved / 1e9:.1f} GFLOP/s")
    print(f"GEMM peak ({dtype}, 2048^3)={peak / 1e9:.1f} GFLOP/s  ratio={achieved / peak:.3f}")
    print(f"this model's {sum(recorder.calls.values())} matmuls of {len(recorder.calls)} shapes, each timed alone: "
          f"{own_gemm_s:.3f} s a step, {flops_per_step / own_gemm_s / 1e9:.1f} GFLOP/s "
          f"({flops_per_step / own_gemm_s / peak:.3f} of the peak); the step achieves "
          f"{own_gemm_s / step_s:.3f} of that ceiling: the rest of its time is outside the matmuls or lost in them")
    full = profile.total_steps * step_s
    print(f"projected {profile.name} run: {profile.total_steps} steps ≈ {full / 60:.1f} min")


if __name__ == "__main__":
    main()
