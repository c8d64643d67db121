"""Training throughput of the linear-attention baseline at a profile, as a fraction of this machine's GEMM peak.

    python bench/train_throughput.py [--profile cpu] [--steps 10] [--threads N] [--mixer NAME] [--cpu-bf16]

Achieved FLOP/s = (FLOPs of one optimiser step, counted by torch.utils.flop_counter: matmuls forward and
backward) / (median measured step time). The peak is the best of a few large square matmuls measured in the
same process, same dtype, same thread count. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
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


def gemm_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--mixer", default="linear_attention")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU (profile.cpu_bf16)")
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

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, optimizer, sampler, profile, device, profile.lr)
    flops_per_step = counter.get_total_flops()

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
    print(f"profile={profile.name} mixer={args.mixer} device={device} threads={args.threads} dtype={dtype}")
    print(f"params={count_parameters(model):,} tokens/step={profile.tokens_per_step:,} steps={args.steps}")
    print(f"step_s(median)={step_s:.3f} tok/s={profile.tokens_per_step / step_s:,.0f}")
    print(f"train FLOP/step={flops_per_step:.3e} achieved={achieved / 1e9:.1f} GFLOP/s")
    print(f"GEMM peak ({dtype}, 2048^3)={peak / 1e9:.1f} GFLOP/s  ratio={achieved / peak:.3f}")
    full = profile.total_steps * step_s
    print(f"projected {profile.name} run: {profile.total_steps} steps ≈ {full / 60:.1f} min")


if __name__ == "__main__":
    main()
