"""bf16 autocast against fp32 on a CPU: tokens/s and val loss on the same seeds, trained side by side in one run.

    python bench/precision.py [--profile cpu] [--mixer deltanet] [--seeds 0 1] [--threads N] [--max-tokens 0]

Each (seed, precision) run goes through the engineer's sandboxed runner exactly as a baseline does (checks, the
efficiency gate, training; no benchmarks), on the prepared corpus (``asiarch data prepare``). Printed: each run's
tokens/s and val loss, then per precision the mean ± sd over seeds, the speed ratio, and whether bf16's mean val
loss is within seed noise of fp32's (``shared.noise.compare``: means apart by at most 2 combined sd). The machine's
own start-up verdict (``services.engineer.precision``) is printed beside it. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.engineer import EngineerSettings, ExperimentSpec, run_experiment
from services.engineer.precision import measure
from shared.mixer.baselines import BASELINES
from shared.mixer.profiles import get_profile
from shared.noise import Measured, compare


def train(mixer: str, profile: str, seed: int, bf16: bool, threads: int, max_tokens: int,
          root: Path) -> tuple[float, float]:
    spec = ExperimentSpec(code=BASELINES[mixer].read_text(), profile=profile,
                          data_dir=EngineerSettings().corpus(), run_dir=root / f"{mixer}-{seed}-{bf16}",
                          threads=threads, max_tokens=max_tokens, eval_samples=0, cpu_bf16=bf16,
                          extra_args=["--seed", str(seed)])
    outcome = run_experiment(spec)
    if not outcome.succeeded:
        raise SystemExit(f"{mixer} seed {seed} ({'bf16' if bf16 else 'fp32'}) failed: {outcome.message}")
    return outcome.metrics.tok_per_s, outcome.metrics.final_val_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--mixer", default="deltanet")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=EngineerSettings().train_threads)
    parser.add_argument("--max-tokens", type=int, default=0, help="cap the profile's tokens (0: the profile's)")
    args = parser.parse_args()
    choice = measure(get_profile(args.profile), args.threads)
    print(f"start-up measurement: fp32 step {choice.fp32_step_s:.3f} s, bf16 {choice.bf16_step_s:.3f} s "
          f"({choice.speedup:.2f}x): the engineer would train in {'bf16' if choice.bf16 else 'fp32'}")
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for bf16 in (False, True):  # side by side, seed by seed, so a drift in load falls on both
                tok_s, val = train(args.mixer, args.profile, seed, bf16, args.threads, args.max_tokens, Path(tmp))
                runs[bf16].append((tok_s, val))
                print(f"{args.mixer} {args.profile} seed {seed} {'bf16' if bf16 else 'fp32'}: {tok_s:8,.0f} tok/s, "
                      f"val loss {val:.4f}", flush=True)
    fp32, bf16 = (Measured.of(v for _, v in runs[k]) for k in (False, True))
    assert fp32 is not None and bf16 is not None
    speed = statistics.fmean(t for t, _ in runs[True]) / statistics.fmean(t for t, _ in runs[False])
    print(f"fp32 val loss {fp32.text()}, bf16 {bf16.text()}: bf16 is {compare(bf16, fp32, None) or 'unknown'} "
          f"against fp32; tokens/s ratio bf16/fp32 {speed:.2f}")


if __name__ == "__main__":
    main()
