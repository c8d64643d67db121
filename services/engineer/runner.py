"""The child side of one experiment: ``python -m services.engineer.runner`` inside the sandbox.

Checks the candidate, trains it, evaluates it, and writes a ``RunResult`` in its run directory (the only place it
may write). Progress lines go there too, one a second at most, for whoever shows it. The parent
(``services.engineer.experiment``) never imports the candidate; only this process does.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch

from services.engineer.data import DataError, load_token_data
from services.engineer.result import (
    PROGRESS_FILE,
    ProgressLine,
    RunResult,
    TrainMetrics,
    encode_progress,
    write_result,
)
from services.engineer.trainer import Progress, TrainingStopped, compare_step_times, train
from shared.mixer.baselines import BASELINES, EFFICIENCY_REFERENCE, baseline_path, load_baseline
from shared.mixer.behaviour import behaviour_signature
from shared.mixer.checks import run_checks
from shared.mixer.contract import CheckFailed, failure_kind
from shared.mixer.frames import candidate_traceback
from shared.mixer.heartbeat import HEARTBEAT_FILE, Heartbeat
from shared.mixer.loader import MixerFactory, mixer_factory
from shared.mixer.model import LanguageModel, ModelConfig
from shared.mixer.profiles import Profile, get_profile

TRACEBACK_CHARS = 6000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Check, train and evaluate one mixer file (runs sandboxed).")
    parser.add_argument("--source", type=Path, required=True, help="the candidate mixer file")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared token data (read-only)")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--eval-samples", type=int, default=-1, help="samples per benchmark (-1: the profile's)")
    parser.add_argument("--max-tokens", type=int, default=0, help="cap the profile's token budget (0: no cap)")
    parser.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on a CPU (fp32 otherwise)")
    parser.add_argument("--allow-quadratic", action="store_true",
                        help="the softmax reference: train even if the complexity check fails, and skip the "
                             "efficiency gate")
    parser.add_argument("--distinct-from", type=Path, default=None,
                        help="JSON {label: behaviour signature}: a candidate that behaves like one fails as duplicate")
    parser.add_argument("--distinct-from-baselines", action="store_true",
                        help="a candidate that behaves like a built-in baseline fails as duplicate")
    return parser.parse_args(argv)


def known_behaviours(args: argparse.Namespace, profile: Profile) -> dict[str, list[float]]:
    """The signatures a candidate must differ from: the given file's, and the baselines' computed here."""
    known: dict[str, list[float]] = json.loads(args.distinct_from.read_text()) if args.distinct_from else {}
    if args.distinct_from_baselines:
        for name in BASELINES:
            mixer_cls = load_baseline(name).Mixer
            known[f"the {name} baseline"] = behaviour_signature(mixer_cls, profile.d_model, profile.n_heads)
    return known


class ProgressFile:
    """Appends progress lines to a file, at most one per ``every_s`` (plus the last)."""

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self.last = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and progress.step < progress.total_steps:
            return
        self.last = now
        line = ProgressLine(step=progress.step, total=progress.total_steps, loss=progress.loss,
                            tok_per_s=progress.tok_per_s, eta_s=progress.eta_s)
        with self.path.open("ab") as handle:
            handle.write(encode_progress(line))


def benchmark_callback(profile: Profile, samples: int, tokenizer_path: Path | None, device: str,
                       factory: MixerFactory, heartbeat: Heartbeat) -> Any:
    """Zero-shot benchmarks on the trained model, then the synthetic tasks (each on a fresh small model)."""
    from tokenizers import Tokenizer

    from services.engineer.evaluation import evaluate, synthetic_score

    tokenizer = Tokenizer.from_file(str(tokenizer_path)) if tokenizer_path and samples else None

    def score(model: Any) -> dict[str, float]:
        heartbeat.beat("evaluation")
        scores: dict[str, float] = {}
        if tokenizer is not None:
            scores |= evaluate(model, tokenizer, samples_per_task=samples, device=device, max_len=profile.seq_len * 2)
        if profile.synthetic_steps and samples:
            build = functools.partial(synthetic_model, factory, profile)
            with torch.enable_grad():  # the trainer evaluates under no_grad; these tasks train their own models
                scores |= synthetic_score(build, steps=profile.synthetic_steps, seq_len=64,
                                          tasks=list(profile.synthetic_tasks), device=device, seed=profile.seed)
        return scores

    return score


def synthetic_model(factory: MixerFactory, profile: Profile, vocab_size: int, seq_len: int) -> LanguageModel:
    """The same trainer-owned model as the main run, small (2 layers), over a synthetic task's vocabulary."""
    config = ModelConfig(vocab_size=vocab_size, d_model=min(profile.d_model, 128), n_layers=2,
                         n_heads=profile.n_heads, seq_len=seq_len)
    return LanguageModel(config, factory)


def experiment(args: argparse.Namespace, heartbeat: Heartbeat) -> RunResult:
    profile = get_profile(args.profile)
    if args.max_tokens:
        profile = profile.with_overrides(tokens=min(profile.tokens, args.max_tokens))
    if args.seed is not None:
        profile = profile.with_overrides(seed=args.seed)
    profile = profile.with_overrides(cpu_bf16=args.cpu_bf16)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_token_data(args.data_dir, profile.name)
    report = run_checks(args.source, profile, data.vocab_size, known_behaviours(args, profile),
                        on_phase=lambda name: heartbeat.beat(f"checks: {name}"))
    if not (args.allow_quadratic and report.kind == "complexity"):
        report.raise_for_failure()
    if not args.allow_quadratic:  # the quadratic reference is trained to be compared with, not held to a speed
        heartbeat.beat("efficiency gate")
        report.measurements["efficiency"] = efficiency_gate(mixer_factory(args.source), profile, data.vocab_size)
    heartbeat.beat("training")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    samples = profile.eval_samples_per_task if args.eval_samples < 0 else args.eval_samples
    evaluate = benchmark_callback(profile, samples or 0, data.tokenizer_path, device, mixer_factory(args.source),
                                  heartbeat)
    result = train(mixer_factory(args.source), profile, data.train, data.val, data.vocab_size, args.run_dir,
                   progress=ProgressFile(args.run_dir / PROGRESS_FILE), evaluate=evaluate,
                   flags={"source": str(args.source), "profile": profile.name})
    return RunResult(status="succeeded", checks=report.measurements, metrics=result, behaviour=report.behaviour)


def efficiency_gate(candidate: MixerFactory, profile: Profile, vocab_size: int) -> dict[str, Any]:
    """The candidate's training step against the slowest built-in baseline's, timed interleaved in this process
    (see ``compare_step_times``), so load on the machine cannot flip the verdict; more than ``efficiency_k`` times
    slower fails as ``efficiency``."""
    try:
        times = compare_step_times(candidate, mixer_factory(baseline_path(EFFICIENCY_REFERENCE)), profile,
                                   vocab_size)
    except Exception as exc:  # the candidate's step raised: its traceback travels as the cause
        raise CheckFailed(failure_kind(exc), f"a training step raised {exc!r}") from exc
    measured = {"reference": EFFICIENCY_REFERENCE, "candidate_s": times.candidate_s,
                "reference_s": times.reference_s, "ratio": times.ratio, "clock": times.clock, "pairs": times.pairs,
                "limit": profile.efficiency_k}
    if times.ratio > profile.efficiency_k:
        raise CheckFailed("efficiency", (
            f"a training step takes {times.candidate_s:.3f} s of {times.clock} against {times.reference_s:.3f} s "
            f"for the {EFFICIENCY_REFERENCE} baseline ({times.ratio:.1f}x, limit {profile.efficiency_k:g}x), "
            f"both measured interleaved in this process, {times.pairs} steps each after "
            f"{profile.efficiency_warmup_steps} warm-up steps: compute it in chunks or cumulatively, with no Python "
            "loop over tokens"))
    return measured


def failure(kind: str, message: str, partial: TrainMetrics | None = None, trace: str = "") -> RunResult:
    return RunResult(status="failed", error_kind=kind, message=message, traceback=trace[-TRACEBACK_CHARS:],
                     metrics=partial or TrainMetrics())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = Heartbeat(args.run_dir / HEARTBEAT_FILE)
    heartbeat.on_every_forward()
    try:
        outcome = experiment(args, heartbeat)
    except DataError as exc:  # the environment's fault (no prepared corpus): never the candidate's
        outcome = RunResult(status="error", message=str(exc))
    except TrainingStopped as exc:
        outcome = failure(exc.kind, exc.message, exc.result, candidate_traceback(exc, args.source))
    except CheckFailed as exc:
        outcome = failure(exc.kind, exc.message, trace=candidate_traceback(exc, args.source))
    except Exception as exc:  # whatever the candidate raised is the experiment's result, not our crash
        outcome = failure(failure_kind(exc), f"{type(exc).__name__}: {exc}",
                          trace=candidate_traceback(exc, args.source))
    write_result(args.run_dir, outcome)
    return 0 if outcome.succeeded else 3


if __name__ == "__main__":
    raise SystemExit(main())
