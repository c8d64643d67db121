"""What the debugger knows about the failure it is fixing, as the LLM and the patch's diagnosis show it.

A failure is grounded in what was measured: the check's own message (what it perturbed and what changed, the step
time against its limit), the failing line with its locals' shapes, the first operation that produced a NaN. The
trial reproduces the failure to capture those; when it cannot (a failure only training reaches), the engineer's
report is all there is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.events import TrainFailed
from shared.mixer.frames import failing_line, is_pointed, pointed_traceback
from shared.mixer.repairs import Failure, suspect_lines
from shared.mixer.trial import TrialOutcome

ADVICE = {
    "efficiency": "It was too slow. Do not drop the idea: replace Python loops over time steps with chunked or "
                  "vectorised tensor operations (process chunks of 64 tokens, carry a state between chunks).",
    "complexity": "Its cost grew quadratically with the sequence length. Keep the idea but never build a "
                  "(seq x seq) matrix over the whole sequence: use chunks of at most 64 with a carried state.",
    "causality": "Outputs depended on future tokens. Check masks (use a lower-triangular mask inside chunks), "
                 "cumulative sums, convolutions (pad on the left only) and any pooling over the sequence.",
    "nan": "It produced NaN or Inf. Bound the decay in log space (log_decay = -F.softplus(a), decay = "
           "exp(log_decay), or a sigmoid), subtract a max before exp, add eps to denominators, normalise keys.",
    "memory": "It ran out of memory. Avoid materialising (batch, heads, seq, d, d) tensors for every step.",
    "timeout": "It ran past its time limit. Remove loops over time steps; vectorise over chunks.",
    "params": "It had too many or too few parameters. Adjust projection sizes, keep the structure.",
    "batch": "Its outputs depended on the batch size. Never mix information across the batch dimension (dim 0): "
             "no statistics, norms or sums over it.",
    "runtime": "Read the shapes at the failing line: make the operation match them, keep the design.",
    "contract": "forward must return a tensor of the input's shape and dtype.",
}


@dataclass(frozen=True)
class Known:
    """The code being fixed and how it fails: from the trial when it reproduced the failure, else the event."""

    code: str
    kind: str
    message: str
    traceback: str
    stage: str = ""
    locals: str = ""
    nan_site: str = ""

    @classmethod
    def of(cls, failure: TrainFailed, trial: TrialOutcome) -> Known:
        known = cls(failure.code, failure.error_kind, failure.message, failure.traceback)
        return known if trial.stage == "training" else known.failing(failure.code, trial)

    def failing(self, code: str, trial: TrialOutcome) -> Known:
        """What is known once ``code`` failed ``trial``. A check's verdict has no frame of the candidate: the
        engineer's traceback stays when it is the same failure of the same code, else the check's method is
        pointed at."""
        kind, message = trial.kind or self.kind, trial.message or self.message
        traceback = trial.traceback
        if not traceback:
            same = code == self.code and kind == self.kind
            traceback = self.traceback if same and self.traceback else pointed_traceback(code, kind, message)
        return replace(self, code=code, kind=kind, message=message, traceback=traceback, stage=trial.stage,
                       locals=trial.locals, nan_site=trial.nan_site)

    def for_repairs(self, d_model: int, n_heads: int) -> Failure:
        return Failure(self.code, self.kind, self.message, self.traceback, self.nan_site, d_model, n_heads)

    @property
    def line(self) -> str:
        """The line that raised; "" for a check's verdict (its traceback only points at the method it called)."""
        number = None if is_pointed(self.traceback) else failing_line(self.traceback, self.code)
        return "" if number is None else f"line {number}: `{self.code.splitlines()[number - 1].strip()}`"

    def measured(self) -> str:
        """The facts, one per line: the kind and the check's message, the failing line, its locals, the NaN site."""
        at = f" (at the {self.stage} check)" if self.stage and self.stage != "training" else ""
        rows = [f"{self.kind}{at}: {self.message[:600]}"]
        rows += [f"failing {self.line}"] if self.line else []
        lines = self.code.splitlines()
        rows += [f"suspect line {number}: `{lines[number - 1].strip()}`: {reason}"
                 for number, reason in ([] if self.line else suspect_lines(self.code, self.kind))]
        rows += [f"locals there: {self.locals[:700]}"] if self.locals else []
        rows += [f"first NaN/Inf: {self.nan_site[:300]}"] if self.nan_site else []
        return "\n".join(rows)

    @property
    def advice(self) -> str:
        return ADVICE.get(self.kind, "")


def patch_diagnosis(known: Known, fix: str, trial: TrialOutcome) -> str:
    """The diagnosis a patch travels with: what failed, where, what was done, and what the trial then saw."""
    where = f" at {known.line}" if known.line else ""
    first = known.message.splitlines()[0][:300] if known.message else ""
    return f"{known.kind}{where}: {first}. Fix: {fix[:400]}. Trial: {trial.summary()}"
