"""Verdicts that hold under load, faults and bad candidates, each met through the real sandboxed run.

The smoke profile, capped to a few thousand tokens and no benchmarks: each run is seconds, and what is asserted
is the verdict (kind, bound, traceback), not the loss.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.engineer import ExperimentSpec, RunResult, run_experiment
from services.engineer.handlers import Engineer, report
from shared.events import ProposalCreated, TrainFailed, new_event_id, utc_now
from shared.mixer.baselines import BASELINES, EFFICIENCY_REFERENCE
from shared.mixer.profiles import get_profile
from shared.mixer.sandbox import GIB
from tests.processes import pids_working_in

BAD_MIXERS = Path(__file__).parent / "fixtures" / "bad_mixers"
SMOKE = get_profile("smoke")
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


@pytest.fixture
def every_core_busy() -> Iterator[list[int]]:
    """One spinning process per core, as a second training or the LLM would be; each ended by its PID."""
    hogs = [subprocess.Popen(BUSY_LOOP) for _ in range(os.cpu_count() or 2)]
    yield [hog.pid for hog in hogs]
    for hog in hogs:
        hog.kill()
        hog.wait()


def run(code: str, corpus_dir: Path, run_dir: Path, **changes: object) -> RunResult:
    spec = ExperimentSpec(code=code, profile="smoke", data_dir=corpus_dir, run_dir=run_dir, threads=1,
                          max_tokens=16_384, eval_samples=0, memory_bytes=3 * GIB)
    for name, value in changes.items():
        setattr(spec, name, value)
    return run_experiment(spec)


def fixture(name: str) -> str:
    return (BAD_MIXERS / f"{name}.py").read_text()


def test_the_slowest_baseline_passes_the_efficiency_gate_with_every_core_busy(
    every_core_busy: list[int], corpus_dir: Path, tmp_path: Path,
) -> None:
    result = run(BASELINES[EFFICIENCY_REFERENCE].read_text(), corpus_dir, tmp_path / "run")
    assert result.succeeded, f"{result.error_kind}: {result.message}"
    gate = result.checks["efficiency"]
    assert gate["ratio"] <= SMOKE.efficiency_k and gate["reference"] == EFFICIENCY_REFERENCE
    for name in ("deltanet", "gated_deltanet", "mamba2"):
        result = run(BASELINES[name].read_text(), corpus_dir, tmp_path / name)
        assert result.succeeded, f"{name}: {result.error_kind}: {result.message}"


def test_a_python_loop_over_tokens_fails_the_efficiency_gate_with_every_core_busy(
    every_core_busy: list[int], corpus_dir: Path, tmp_path: Path,
) -> None:
    result = run(fixture("loops_over_tokens"), corpus_dir, tmp_path / "run")
    assert result.error_kind == "efficiency", result.message
    assert EFFICIENCY_REFERENCE in result.message and "interleaved" in result.message
    assert f"limit {SMOKE.efficiency_k:g}x" in result.message


@pytest.mark.parametrize(("name", "phase"), [("loops_forever", "checks"), ("hangs_in_training", "training")])
def test_a_forward_that_never_returns_is_a_timeout_within_the_stall_limit(
    name: str, phase: str, corpus_dir: Path, tmp_path: Path,
) -> None:
    started = time.monotonic()
    # Room enough that the autograd graph the spinning loop grows (~0.1 GB/s) does not hit the limit first.
    result = run(fixture(name), corpus_dir, tmp_path / "run", memory_bytes=8 * GIB, max_tokens=40_000)
    took = time.monotonic() - started
    assert result.error_kind == "timeout", result.message
    assert phase in result.message and f"{SMOKE.stall_seconds:g} s" in result.message
    assert took < 60, f"{took:.0f} s to notice a hang at smoke"


def test_an_allocation_bomb_is_memory(corpus_dir: Path, tmp_path: Path) -> None:
    result = run(fixture("allocates_unbounded"), corpus_dir, tmp_path / "run", memory_bytes=2 * GIB)
    assert result.error_kind == "memory", result.message


CANDIDATE_FAILURES = [
    ("peek_future", "causality"),
    ("makes_nan", "nan"),
    ("shape_bug", "contract"),
    ("softmax_quadratic", "complexity"),
    ("hangs_in_training", "timeout"),
    ("allocates_unbounded", "memory"),
    ("raises_in_forward", "runtime"),
]


@pytest.mark.parametrize(("name", "kind"), CANDIDATE_FAILURES)
def test_every_failure_reaches_the_debugger_with_the_candidates_file_and_line(
    name: str, kind: str, corpus_dir: Path, tmp_path: Path,
) -> None:
    code = fixture(name)
    result = run(code, corpus_dir, tmp_path / "run", memory_bytes=2 * GIB, max_tokens=40_000)
    assert result.error_kind == kind, result.message
    proposal = ProposalCreated(event_id=new_event_id(), occurred_at=utc_now(), producer="test", campaign_id="c",
                               experiment_id="e", name=name, motivation="m", code=code, profile="smoke")
    engineer = Engineer(corpus_dir=corpus_dir, runs_dir=tmp_path, default_profile="smoke", threads=1,
                        memory_bytes=2 * GIB)
    failed = report(engineer, proposal, result, "smoke", 1)
    assert isinstance(failed, TrainFailed) and failed.error_kind == kind
    assert 'mixer.py", line ' in failed.traceback, failed.traceback


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s"
        time.sleep(0.2)


def test_kill_9_of_asiarch_train_leaves_no_sandboxed_process(corpus_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "ASIARCH_CORPUS_DIR": str(corpus_dir), "ASIARCH_DATA_DIR": str(tmp_path / "var")}
    train = subprocess.Popen([sys.executable, "-m", "shared.cli.main", "train", str(BAD_MIXERS / "loops_forever.py"),
                              "--profile", "smoke", "--run-dir", str(run_dir), "--threads", "1"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: pids_working_in(run_dir), 60, "sandboxed")
        sandboxed = pids_working_in(run_dir)
        os.kill(train.pid, signal.SIGKILL)
        train.wait()
        wait_for(lambda: not {pid for pid in sandboxed if Path(f"/proc/{pid}").exists()}, 10, "gone")
    finally:
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
