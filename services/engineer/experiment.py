"""The parent side of one experiment: run the candidate in the sandbox and read what happened.

Used by the engineer service and by ``asiarch train``. The candidate's code is only ever imported by the child
(``services.engineer.runner``); a child that dies without a result (killed on time or memory, crashed in C) is
classified from the sandbox's account of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from services.engineer.result import (
    PROGRESS_FILE,
    RESULT_FILE,
    ProgressLine,
    RunResult,
    RunResultError,
    TrainMetrics,
    decode_progress,
    read_result,
)
from shared.mixer.frames import CANDIDATE_FILE
from shared.mixer.heartbeat import HEARTBEAT_FILE, last_phase
from shared.mixer.profiles import get_profile
from shared.mixer.sandbox import GIB, SandboxLimits, SandboxResult, run_python_sandboxed

log = logging.getLogger(__name__)
DISTINCT_FROM_FILE = "distinct_from.json"
# Beyond the profile's training time limit: start-up, checks, evaluation and the checkpoint.
WALL_MARGIN_S = 300.0
LOG_TAIL_CHARS = 3000


@dataclass
class ExperimentSpec:
    code: str
    profile: str
    data_dir: Path
    run_dir: Path
    threads: int = 0
    memory_bytes: int = 8 * GIB
    eval_samples: int = -1
    max_tokens: int = 0
    extra_args: list[str] = field(default_factory=list)
    # bf16 autocast on a CPU, where this machine was measured to gain from it (services.engineer.precision).
    cpu_bf16: bool = False
    # Candidates (not the baselines themselves) must behave unlike the baselines and these earlier mixers.
    distinct_from: dict[str, list[float]] | None = None

    def distinct_args(self) -> list[str]:
        """The runner's arguments for the duplicate check; writes the signatures it reads into the run dir."""
        if self.distinct_from is None:
            return []
        path = self.run_dir / DISTINCT_FROM_FILE
        path.write_text(json.dumps(self.distinct_from))
        return ["--distinct-from", str(path), "--distinct-from-baselines"]

    def limits(self) -> SandboxLimits:
        profile = get_profile(self.profile)
        max_train = profile.max_train_seconds or 24 * 3600.0
        return SandboxLimits(wall_s=max_train + WALL_MARGIN_S, memory_bytes=self.memory_bytes,
                             stall_s=profile.stall_seconds)

    def args(self, source: Path) -> list[str]:
        precision = ["--cpu-bf16"] if self.cpu_bf16 else []
        return ["--source", str(source), "--profile", self.profile, "--data-dir", str(self.data_dir.resolve()),
                "--run-dir", str(self.run_dir), "--threads", str(self.threads), "--eval-samples",
                str(self.eval_samples), "--max-tokens", str(self.max_tokens), *precision, *self.extra_args,
                *self.distinct_args()]


def stop_message(run_dir: Path, sandbox: SandboxResult, stall_s: float | None) -> str:
    """Why a child that left no result ended, in words an operator and the debugger can act on."""
    if sandbox.killed_reason == "stalled":
        return (f"no module forward finished for {stall_s:g} s (the profile's stall limit) during "
                f"{last_phase(run_dir / HEARTBEAT_FILE)}: a forward that never returns, or a hang; the run was "
                f"stopped after {sandbox.wall_s:.0f} s")
    reason = sandbox.killed_reason or f"exit code {sandbox.returncode}"
    return f"the run was stopped ({reason}) after {sandbox.wall_s:.0f} s"


def read_outcome(run_dir: Path, sandbox: SandboxResult, stall_s: float | None = None) -> RunResult:
    tail = sandbox.stderr_tail[-LOG_TAIL_CHARS:]
    if (run_dir / RESULT_FILE).exists() and sandbox.killed_reason is None:
        try:
            result = read_result(run_dir)
        except RunResultError as exc:
            # Only the candidate's own process writes there: a result it garbled is its failure.
            log.error("%s", exc)
            return RunResult(status="failed", error_kind="runtime", message=str(exc), traceback=tail, log_tail=tail)
        return msgspec.structs.replace(result, log_tail=tail, wall_s=sandbox.wall_s)
    kind = sandbox.error_kind or "runtime"
    message = stop_message(run_dir, sandbox, stall_s)
    if sandbox.peak_rss_bytes:
        message += f", peak memory {sandbox.peak_rss_bytes / 2**20:,.0f} MiB"
    metrics = TrainMetrics(cpu_core_seconds=sandbox.cpu_s, wall_seconds=sandbox.wall_s)
    return RunResult(status="failed", error_kind=kind, message=message, traceback=tail, log_tail=tail,
                     metrics=metrics, wall_s=sandbox.wall_s)


ProgressCallback = Callable[[ProgressLine], None]


def follow_progress(path: Path, done: threading.Event, callback: ProgressCallback) -> None:
    """Call ``callback`` with each new progress line until ``done`` is set."""
    position = 0
    while not done.wait(0.5):
        if not path.exists():
            continue
        with path.open() as handle:
            handle.seek(position)
            for line in handle:
                if line.endswith("\n"):
                    callback(decode_progress(line))
            position = handle.tell()


def run_experiment(spec: ExperimentSpec, on_progress: ProgressCallback | None = None) -> RunResult:
    """Blocks until the sandboxed run ends; progress lines go to ``on_progress`` from a helper thread."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, PROGRESS_FILE, HEARTBEAT_FILE):
        (spec.run_dir / stale).unlink(missing_ok=True)
    source = spec.run_dir / CANDIDATE_FILE
    source.write_text(spec.code)
    done = threading.Event()
    watcher = None
    if on_progress is not None:
        watcher = threading.Thread(target=follow_progress, args=(spec.run_dir / PROGRESS_FILE, done, on_progress),
                                   daemon=True)
        watcher.start()
    limits = spec.limits()
    started = time.monotonic()
    try:
        sandbox = run_python_sandboxed("services.engineer.runner", spec.run_dir, limits, spec.args(source),
                                       module=True, read_only=[spec.data_dir],
                                       heartbeat=spec.run_dir / HEARTBEAT_FILE)
    finally:
        done.set()
        if watcher is not None:
            watcher.join(timeout=2)
    outcome = read_outcome(spec.run_dir, sandbox, limits.stall_s)
    return msgspec.structs.replace(outcome, wall_s=time.monotonic() - started)
