"""Engineer's handlers: a proposal or a patch becomes a sandboxed training attempt, or a rejection.

Events out, in order: ``train.started`` (emitted at once), then ``train.succeeded`` or ``train.failed``. Their ids
derive from the candidate event, so a worker that dies mid-run and is redelivered the candidate republishes the
same ids: each experiment attempt is reported once.

Only the candidate's own faults become ``train.failed`` (for the debugger): a static problem (a syntax error, a
missing import), a failed check, a failed or hung training. What this machine lacks (the profile's prepared
corpus, disk space) is ``NotReady``: the candidate waits, queued, and the health endpoint names the fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.engineer.data import data_problem
from services.engineer.experiment import ExperimentSpec, run_experiment
from services.engineer.precision import cpu_bf16
from services.engineer.result import RunResult
from shared import metrics
from shared.bus import Delivery
from shared.errors import NotReady
from shared.events import (
    CurvePoint,
    DebugPatched,
    Event,
    ProposalCreated,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    caused_by,
)
from shared.memory_client import MemoryClient, MemoryUnavailable
from shared.mixer.frames import names_the_candidate, pointed_traceback
from shared.mixer.profiles import get_profile
from shared.mixer.sandbox import GIB
from shared.mixer.source import static_problem

log = logging.getLogger(__name__)
PRODUCER = "engineer"
# A run's checkpoint, logs and TensorBoard files, with room to spare: below this, runs wait for an operator.
MIN_FREE_BYTES = 2 * GIB


@dataclass
class Engineer:
    corpus_dir: Path
    runs_dir: Path
    default_profile: str
    threads: int
    memory_bytes: int
    max_tokens: int = 0
    eval_samples: int = -1
    host: str = field(default_factory=socket.gethostname)
    # Where trained mixers' behaviour signatures come from; None compares candidates with the baselines only.
    memory: MemoryClient | None = None
    # Where this machine's precision verdicts are cached (services.engineer.precision); None: always fp32 on a CPU.
    precision_dir: Path | None = None

    def cpu_bf16(self, profile: str) -> bool:
        if self.precision_dir is None:
            return False
        return cpu_bf16(get_profile(profile), self.threads, self.precision_dir)

    def profile_for(self, event: ProposalCreated | DebugPatched) -> str:
        """The profile the candidate names; an upcast v1 proposal (or a patch of one) names none."""
        return event.profile or self.default_profile

    def environment_problem(self, profile: str) -> str | None:
        """What keeps this worker from running a candidate at the profile, with the fix; None when nothing does."""
        return data_problem(self.corpus_dir, profile) or self.disk_problem()

    def disk_problem(self) -> str | None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.runs_dir).free
        if free < MIN_FREE_BYTES:
            return (f"only {free / 2**20:,.0f} MiB are free where runs are written ({self.runs_dir}): free at "
                    f"least {MIN_FREE_BYTES / 2**30:g} GiB")
        return None


    async def known_behaviours(self, profile: str, experiment_id: str) -> dict[str, list[float]]:
        """Earlier trained mixers' signatures (label -> signature), the candidate's own experiment left out so a
        redelivered candidate is not its own duplicate. Without memory only the baselines are compared."""
        if self.memory is None:
            return {}
        try:
            known = await self.memory.behaviours(profile)
        except MemoryUnavailable as exc:
            log.warning("%s: compared with the baselines only: %s", experiment_id, exc)
            return {}
        return {f"experiment {b.experiment_id} ({b.name})": b.behaviour for b in known
                if b.experiment_id != experiment_id}

    def spec(self, event: ProposalCreated | DebugPatched | ReplicateRequested, profile: str, attempt: int,
             distinct_from: dict[str, list[float]]) -> ExperimentSpec:
        return ExperimentSpec(
            code=event.code, profile=profile, data_dir=self.corpus_dir,
            run_dir=(self.runs_dir / event.experiment_id / f"attempt-{attempt}").resolve(), threads=self.threads,
            memory_bytes=self.memory_bytes,
            max_tokens=self.max_tokens, eval_samples=self.eval_samples, distinct_from=distinct_from,
            cpu_bf16=self.cpu_bf16(profile),
        )


def attempt_of(event: Event) -> int:
    return event.attempt if isinstance(event, DebugPatched) else 1


async def on_candidate(engineer: Engineer, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, (ProposalCreated, DebugPatched))
    profile = engineer.profile_for(event)
    attempt = attempt_of(event)
    problem = static_problem(event.code)
    if problem is not None:  # a typo or a missing import is the debugger's to fix, not a reason to drop the idea
        metrics.TRAIN_RUNS.labels(PRODUCER, "failed", problem.reason).inc()
        return (TrainFailed(**caused_by(event, PRODUCER, 1), attempt=attempt, error_kind=problem.reason,
                            message=problem.detail, traceback=pointed_traceback(event.code, problem.reason,
                                                                                problem.detail),
                            code=event.code, worker_host=engineer.host, profile=profile),)
    waiting_for = await asyncio.to_thread(engineer.environment_problem, profile)
    if waiting_for is not None:
        raise NotReady(waiting_for)
    device = "cuda" if await asyncio.to_thread(cuda_available) else "cpu"
    await delivery.emit(TrainStarted(**caused_by(event, PRODUCER, 0), attempt=attempt, worker_host=engineer.host,
                                     device=device, profile=profile))
    known = await engineer.known_behaviours(profile, event.experiment_id)
    spec = await asyncio.to_thread(engineer.spec, event, profile, attempt, known)  # may measure the precision
    outcome = await asyncio.to_thread(run_experiment, spec)
    if outcome.status == "error":
        raise NotReady(outcome.message)
    if outcome.error_kind == "duplicate":
        # Not a failure to debug: the idea is already measured, so the proposal ends here.
        metrics.PROPOSALS_REJECTED.labels(PRODUCER, "duplicate").inc()
        return (ProposalRejected(**caused_by(event, PRODUCER, 1), reason="duplicate", detail=outcome.message),)
    count(outcome, attempt)
    return (report(engineer, event, outcome, profile, attempt),)


async def on_replicate(engineer: Engineer, event: Event, delivery: Delivery) -> Sequence[Event]:
    """Train a run's code again on another seed. No checks are skipped and none is new to this code, so what fails
    is the mixer on that seed: reported as such, never as a candidate for the debugger."""
    assert isinstance(event, ReplicateRequested)
    waiting_for = await asyncio.to_thread(engineer.environment_problem, event.profile)
    if waiting_for is not None:
        raise NotReady(waiting_for)
    spec = await asyncio.to_thread(engineer.spec, event, event.profile, 1, {})
    spec = dataclasses.replace(spec, run_dir=spec.run_dir.parent / f"seed-{event.seed}", distinct_from=None,
                               extra_args=["--seed", str(event.seed)])
    outcome = await asyncio.to_thread(run_experiment, spec)
    if outcome.status == "error":
        raise NotReady(outcome.message)
    m = outcome.metrics
    metrics.TRAIN_RUNS.labels(PRODUCER, "replicate", outcome.error_kind or "").inc()
    metrics.CPU_CORE_SECONDS.labels(PRODUCER, "replicate").inc(m.cpu_core_seconds)
    metrics.GPU_SECONDS.labels(PRODUCER, "replicate").inc(m.gpu_seconds)
    common = {"seed": event.seed, "profile": event.profile, "tokens": m.tokens, "device": m.device,
              "gpu_seconds": m.gpu_seconds, "cpu_core_seconds": m.cpu_core_seconds, "wall_seconds": outcome.wall_s,
              "worker_host": engineer.host}
    if not outcome.succeeded:
        return (ReplicateTrained(**caused_by(event, PRODUCER), **common, succeeded=False,
                                 error_kind=outcome.error_kind or "runtime", message=outcome.message[:2000]),)
    return (ReplicateTrained(**caused_by(event, PRODUCER), **common, succeeded=True, val_loss=m.final_val_loss,
                             train_loss=m.final_train_loss, benchmarks=outcome.benchmarks(),
                             curve=tuple(CurvePoint(step=p.step, tokens=p.tokens, loss=p.loss) for p in m.curve)),)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def count(outcome: RunResult, attempt: int) -> None:
    label = "succeeded" if outcome.succeeded else "failed"
    metrics.TRAIN_RUNS.labels(PRODUCER, label, outcome.error_kind or "").inc()
    metrics.GPU_SECONDS.labels(PRODUCER, label).inc(outcome.metrics.gpu_seconds)
    metrics.CPU_CORE_SECONDS.labels(PRODUCER, label).inc(outcome.metrics.cpu_core_seconds)
    if outcome.succeeded and attempt > 1:
        metrics.DEBUG_FIXED.labels(PRODUCER, str(attempt)).inc()


def report(engineer: Engineer, event: ProposalCreated | DebugPatched, outcome: RunResult, profile: str,
           attempt: int) -> TrainSucceeded | TrainFailed:
    m = outcome.metrics
    envelope = caused_by(event, PRODUCER, 1)
    if outcome.succeeded:
        return TrainSucceeded(
            **envelope, attempt=attempt, profile=profile,
            curve=tuple(CurvePoint(step=p.step, tokens=p.tokens, loss=p.loss) for p in m.curve),
            train_loss=m.final_train_loss, val_loss=m.final_val_loss, benchmarks=outcome.benchmarks(),
            params=m.params, tokens=m.tokens, tokens_per_s=m.tok_per_s, device=m.device, gpu_seconds=m.gpu_seconds,
            cpu_core_seconds=m.cpu_core_seconds, checkpoint_path=m.checkpoint_path, worker_host=engineer.host,
            behaviour=tuple(outcome.behaviour), precision=m.precision,
        )
    trace = outcome.traceback if names_the_candidate(outcome.traceback) else pointed_traceback(
        event.code, outcome.error_kind, outcome.message)
    return TrainFailed(
        **envelope, attempt=attempt, error_kind=outcome.error_kind,  # type: ignore[arg-type]
        message=outcome.message[:2000], traceback=trace, log_tail=outcome.log_tail, code=event.code,
        device=m.device, device_seconds=m.gpu_seconds or m.cpu_core_seconds, worker_host=engineer.host,
        profile=profile,
    )
