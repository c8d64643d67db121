"""What the sandboxed runner hands the engineer: one versioned type per crossing, decoded strictly.

The runner (the child) writes a ``RunResult`` to ``RESULT_FILE`` in its run directory and appends a
``ProgressLine`` per update to ``PROGRESS_FILE``; the parent decodes both with these same types, and an unknown
field, a wrong type or an unknown error kind is an error, never ignored. ``train.succeeded`` and ``train.failed``
are built from a ``RunResult`` and nothing else. The result is MessagePack rather than JSON because a diverged
loss is NaN and must come back as NaN (JSON has no NaN).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from shared.events import CHECK_FAILURE_KINDS, CurvePoint

RESULT_FILE = "result.msgpack"
PROGRESS_FILE = "progress.jsonl"


class RunResultError(ValueError):
    """A result file that is not a ``RunResult`` of this version: the runner and the engineer disagree."""


class TrainMetrics(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What training measured; filled as it goes, so a stopped run still reports how far it got."""

    curve: list[CurvePoint] = []
    final_train_loss: float = math.nan
    final_val_loss: float = math.nan
    params: int = 0
    mixer_params: int = 0
    tokens: int = 0
    steps: int = 0
    tok_per_s: float = 0.0
    step_seconds: float = 0.0  # median optimiser-step time after warm-up
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": the forward and backward under bf16 autocast (weights and optimiser fp32)
    wall_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cpu_core_seconds: float = 0.0  # process CPU time over all threads
    checkpoint_path: str = ""
    eval_scores: dict[str, float] = {}


class RunResult(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="run_result.v1"):
    # "error": the run could not happen for a reason that is not the candidate's (no prepared corpus); its message
    # says what the operator must do. Never a train.failed.
    status: Literal["succeeded", "failed", "error"]
    error_kind: str = ""  # one of CHECK_FAILURE_KINDS when failed
    message: str = ""
    traceback: str = ""
    metrics: TrainMetrics = msgspec.field(default_factory=TrainMetrics)
    checks: dict[str, Any] = {}  # the checks' measurements (the efficiency gate's too)
    # The checks' behaviour signature (see shared.mixer.behaviour); empty when the checks did not get that far.
    behaviour: list[float] = []
    # Filled by the parent: the child's stderr tail and the whole run's wall time.
    log_tail: str = ""
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status == "failed" and self.error_kind not in CHECK_FAILURE_KINDS:
            raise ValueError(f"unknown error kind {self.error_kind!r}; known: {', '.join(sorted(CHECK_FAILURE_KINDS))}")

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def benchmarks(self) -> dict[str, float]:
        """Benchmark accuracies (the validation loss and perplexity are reported on their own)."""
        return {k: v for k, v in self.metrics.eval_scores.items() if k not in ("val_loss", "val_ppl")}


class ProgressLine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    step: int
    total: int
    loss: float
    tok_per_s: float
    eta_s: float


_RESULT_DECODER = msgspec.msgpack.Decoder(RunResult)
_PROGRESS_DECODER = msgspec.json.Decoder(ProgressLine)


def write_result(run_dir: Path, result: RunResult) -> None:
    """Atomically: a reader never sees half a result."""
    tmp = run_dir / f"{RESULT_FILE}.tmp"
    tmp.write_bytes(msgspec.msgpack.encode(result))
    os.replace(tmp, run_dir / RESULT_FILE)


def read_result(run_dir: Path) -> RunResult:
    try:
        return _RESULT_DECODER.decode((run_dir / RESULT_FILE).read_bytes())
    except (msgspec.DecodeError, ValueError) as exc:
        raise RunResultError(f"{run_dir / RESULT_FILE} is not a run_result.v1: {exc}") from exc


def encode_progress(line: ProgressLine) -> bytes:
    return msgspec.json.encode(line) + b"\n"


def decode_progress(line: bytes | str) -> ProgressLine:
    return _PROGRESS_DECODER.decode(line)
