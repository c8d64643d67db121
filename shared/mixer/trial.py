"""Does a patched mixer get past the check that failed? The engineer's checks, plus what they cannot see on a CPU,
in seconds and sandboxed.

The debugger runs the failed code here first (to reproduce the failure with the failing line's locals and, for a
NaN, the first operation that produced one) and then every patch, so that only a patch that passes, or fails at a
later stage than the failed code, is sent back to the engineer. The child side (``python -m shared.mixer.trial``)
imports the mixer; the parent side (``try_mixer``) only starts it and reads ``trial.json``.

Stages, in the engineer's order: its checks (syntax … behaviour), then ``device`` (the mixer's parameters and input
on the meta device: a tensor created in ``forward`` without ``device=`` stays on the CPU and fails there, as it
fails on a GPU), ``efficiency`` (a model's forward and backward against the efficiency reference's, interleaved,
in CPU time; the optimiser step, the same for both, is left out, so the ratio is at least the engineer's) and
``stress`` (finite outputs and gradients at the longest length and at larger inputs, where an unbounded decay
overflows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from shared.mixer.frames import CANDIDATE_FILE, candidate_traceback, frame_locals
from shared.mixer.sandbox import GIB, SandboxLimits, run_python_sandboxed

TRIAL_FILE = "trial.json"
TRIAL_LIMITS = SandboxLimits(wall_s=150.0, memory_bytes=4 * GIB)
CHECK_STAGES = ("syntax", "import", "contract", "numerics", "causality", "batch", "params", "complexity",
                "behaviour")
# "training" is never a trial's stage: it stands for a failure the trial does not reproduce (one only training
# reaches), which only a patch that passes every stage gets past.
STAGES = (*CHECK_STAGES, "device", "efficiency", "stress", "training", "passed")
STRESS_LENGTH = 2048
STRESS_SCALES = (1.0, 8.0)
# The efficiency stage's model: the profile's width and heads, capped in depth, length and batch (a ratio, not a
# throughput, is measured; it changes little with them).
EFFICIENCY_MAX_LAYERS, EFFICIENCY_MAX_LEN, EFFICIENCY_BATCH, EFFICIENCY_PAIRS = 2, 512, 4, 3


class TrialOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How far a mixer got: the stage it failed at ("passed" when none), with what the failure showed."""

    stage: str
    kind: str = ""
    message: str = ""
    traceback: str = ""  # the candidate's own frames; "" when nothing in its file raised (a check's verdict)
    locals: str = ""  # the failing line's locals (shapes, dtypes, devices) where they could be captured
    nan_site: str = ""  # the first operation whose output was not finite, with the candidate's line
    measurements: dict[str, Any] = {}
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.stage == "passed"

    @property
    def progress(self) -> int:
        """The stage's place in the order: a larger one got further."""
        return STAGES.index(self.stage) if self.stage in STAGES else 0

    def summary(self) -> str:
        if self.passed:
            return f"passed every trial stage in {self.seconds:.1f} s"
        return f"fails at {self.stage}: {self.kind}: {self.message.splitlines()[0] if self.message else ''}"[:400]


# --- the parent side -------------------------------------------------------------------------------------------


def try_mixer(code: str, profile: str, *, device_check: bool = False, stress: bool = False,
              work_dir: Path | None = None) -> TrialOutcome:
    """Run the trial on ``code`` in the sandbox. A trial the sandbox stopped (time, memory) fails at the stage it was
    in, with that as its kind."""
    with tempfile.TemporaryDirectory(prefix="trial-", dir=work_dir) as tmp:
        run_dir = Path(tmp)
        (run_dir / CANDIDATE_FILE).write_text(code)
        args = ["--source", CANDIDATE_FILE, "--profile", profile]
        args += ["--device-check"] if device_check else []
        args += ["--stress"] if stress else []
        result = run_python_sandboxed("shared.mixer.trial", run_dir, TRIAL_LIMITS, args, module=True)
        try:
            outcome = msgspec.json.decode((run_dir / TRIAL_FILE).read_bytes(), type=TrialOutcome)
        except (OSError, msgspec.DecodeError):
            outcome = TrialOutcome(stage="syntax")
        if result.ok:
            return outcome
        kind = result.error_kind or "runtime"
        detail = result.killed_reason or f"exit status {result.returncode}"
        return TrialOutcome(stage=outcome.stage, kind=kind, seconds=result.wall_s,
                            message=f"the trial was stopped at {outcome.stage} ({detail}) after {result.wall_s:.0f} s: "
                                    f"{result.stderr_tail[-500:]}")


# --- the child side --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the checks a patch must pass on one mixer (runs sandboxed).")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--device-check", action="store_true", help="run forward on the meta device")
    parser.add_argument("--stress", action="store_true", help="numerics at the longest length and larger inputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse_args(argv)
    started = time.perf_counter()
    outcome = run_trial(args, lambda stage: write_outcome(TrialOutcome(stage=stage)))
    write_outcome(msgspec.structs.replace(outcome, seconds=round(time.perf_counter() - started, 2)))
    return 0


def write_outcome(outcome: TrialOutcome) -> None:
    """Written as each stage starts too, so a trial the sandbox kills still says where it was."""
    Path(TRIAL_FILE).write_bytes(msgspec.json.encode(outcome))


def run_trial(args: argparse.Namespace, on_stage: Callable[[str], None]) -> TrialOutcome:
    from shared.mixer.checks import run_checks
    from shared.mixer.profiles import get_profile

    profile = get_profile(args.profile)
    reached: list[str] = ["syntax"]

    def heard(stage: str) -> None:
        reached.append(stage)
        on_stage(stage)

    report = run_checks(args.source, profile, on_phase=heard)
    if not report.passed:
        return failed(args.source, profile, reached[-1], report.kind or "runtime", report.message, report.error)
    cls = load_class(args.source)
    measurements: dict[str, Any] = {}
    for stage, wanted, check in (("device", args.device_check, check_device),
                                 ("efficiency", True, check_efficiency),
                                 ("stress", args.stress, check_stress)):
        if not wanted:
            continue
        on_stage(stage)
        try:
            measurements |= check(cls, profile)
        except StageFailed as exc:
            return failed(args.source, profile, stage, exc.kind, exc.message, exc.__cause__, exc.nan_site)
    return TrialOutcome(stage="passed", measurements=measurements)


def failed(source: Path, profile: Any, stage: str, kind: str, message: str, error: BaseException | None,
           nan_site: str = "") -> TrialOutcome:
    shown = candidate_traceback(error, source) if error is not None else ""
    if kind == "nan" and not nan_site:
        nan_site = locate_non_finite(source, profile)
    return TrialOutcome(stage=stage, kind=kind, message=message, traceback=shown,
                        locals=frame_locals(error, source) if error is not None else "", nan_site=nan_site)


class StageFailed(Exception):
    def __init__(self, kind: str, message: str, nan_site: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.nan_site = kind, message, nan_site


def load_class(source: Path) -> Any:
    from shared.mixer.loader import load_module, mixer_class

    return mixer_class(load_module(source))


def check_device(cls: Any, profile: Any) -> dict[str, Any]:
    """Forward with the parameters, buffers and input on the meta device: a tensor ``forward`` makes on the CPU
    then meets a meta one and raises, as it would meet a GPU one. Any other error says nothing about devices."""
    import torch

    from shared.mixer.contract import build_mixer

    mixer = build_mixer(cls, profile.d_model, profile.n_heads).to("meta")
    try:
        mixer(torch.randn(2, 33, profile.d_model, device="meta"))
    except RuntimeError as exc:
        if "device" in str(exc):
            raise StageFailed("runtime", f"with its parameters and input on another device, forward raised "
                                         f"{exc!r}: a tensor made in forward without device=x.device stays on the "
                                         "CPU and breaks the run on a GPU") from exc
    except Exception:  # an op without a meta kernel: nothing learnt about devices
        pass
    return {}


def check_efficiency(cls: Any, profile: Any) -> dict[str, Any]:
    import torch

    from shared.mixer.baselines import EFFICIENCY_REFERENCE, load_baseline
    from shared.mixer.model import LanguageModel, model_config

    seq_len = min(profile.seq_len, EFFICIENCY_MAX_LEN)
    small = profile.with_overrides(n_layers=min(profile.n_layers, EFFICIENCY_MAX_LAYERS), seq_len=seq_len)
    reference = load_baseline(EFFICIENCY_REFERENCE).Mixer
    models = [LanguageModel(model_config(small), lambda d, h, c=c: c(d, h)) for c in (reference, cls)]
    tokens = torch.randint(0, small.vocab_size, (EFFICIENCY_BATCH, seq_len + 1),
                           generator=torch.Generator().manual_seed(0))
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(1 + EFFICIENCY_PAIRS):  # the first round warms up
        for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
            start = time.process_time()
            try:
                models[which].loss(tokens[:, :-1], tokens[:, 1:]).backward()
            except Exception as exc:  # the candidate's step raised
                raise StageFailed("runtime", f"a training step raised {exc!r}") from exc
            if round_:
                times[which].append(time.process_time() - start)
    ratio = statistics.median(times[1]) / max(statistics.median(times[0]), 1e-9)
    measured = {"step_ratio": round(ratio, 2), "limit": profile.efficiency_k, "reference": EFFICIENCY_REFERENCE}
    if ratio > profile.efficiency_k:
        raise StageFailed("efficiency", (
            f"a forward and backward pass takes {ratio:.1f}x the {EFFICIENCY_REFERENCE} baseline's (limit "
            f"{profile.efficiency_k:g}x) at T={seq_len}: compute it in chunks or cumulatively, with no Python loop "
            "over tokens"))
    return measured


def check_stress(cls: Any, profile: Any) -> dict[str, Any]:
    """Finite outputs and gradients at ``STRESS_LENGTH`` tokens and at inputs scaled up: trained weights grow, and
    a decay or a normaliser that only stays finite on short, unit-scale inputs overflows in training."""
    import torch

    from shared.mixer.contract import build_mixer

    mixer = build_mixer(cls, profile.d_model, profile.n_heads)
    for scale in STRESS_SCALES:
        x = (scale * torch.randn(1, STRESS_LENGTH, profile.d_model,
                                 generator=torch.Generator().manual_seed(3))).requires_grad_(True)
        out = mixer(x)
        where = f"T={STRESS_LENGTH}, inputs scaled by {scale:g}"
        if not torch.isfinite(out).all():
            raise StageFailed("nan", f"{int((~torch.isfinite(out)).sum())} of {out.numel()} outputs are NaN/Inf at "
                                     f"{where}", first_non_finite(mixer, x.detach()))
        out.square().mean().backward()
        if x.grad is not None and not torch.isfinite(x.grad).all():
            raise StageFailed("nan", f"the input's gradient has NaN/Inf at {where}")
        mixer.zero_grad(set_to_none=True)
    return {"stress_length": STRESS_LENGTH}


def locate_non_finite(source: Path, profile: Any) -> str:
    """The first non-finite operation of a forward at the numerics check's size."""
    import torch

    from shared.mixer.contract import build_mixer

    try:
        mixer = build_mixer(load_class(source), profile.d_model, profile.n_heads)
        return first_non_finite(mixer, torch.randn(2, 77, profile.d_model))
    except Exception:  # the site is a hint; the failure itself is already known
        return ""


def first_non_finite(mixer: Any, x: Any) -> str:
    """The first operation of a forward whose floating output holds NaN or Inf, named with the candidate's line
    that called it and the range of its inputs; "" when every output is finite."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class FirstNonFinite(TorchDispatchMode):
        found = ""

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if not self.found:
                outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
                if any(not torch.isfinite(t).all() for t in outs):
                    self.found = describe_site(func, args)
            return out

    mode = FirstNonFinite()
    with torch.no_grad(), mode:
        mixer(x)
    return mode.found


def describe_site(func: Any, args: Any) -> str:
    import torch
    from torch.utils._pytree import tree_flatten

    frames = [f for f in traceback.extract_stack() if Path(f.filename).name == CANDIDATE_FILE]
    where = f"line {frames[-1].lineno}: `{(frames[-1].line or '').strip()}`" if frames else "outside the mixer's file"
    ranges = [f"[{t.min().item():.3g}, {t.max().item():.3g}]" for t in tree_flatten(args)[0]
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and torch.isfinite(t).all()]
    inputs = f" on finite inputs in {', '.join(ranges[:3])}" if ranges else ""
    return f"{func} at {where}{inputs}"


if __name__ == "__main__":
    raise SystemExit(main())
