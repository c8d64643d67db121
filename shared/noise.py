"""What a measurement can tell apart from seed noise (docs/architecture.md §7).

At the small profiles two seeds of the same mixer differ, and so does every score computed from their runs: a
comparison of single numbers ranks chance. Everything here reads the spread measured over the baselines' seeds:

- ``compare``: whether one val loss is better or worse than another beyond noise, i.e. their means differ by more
  than ``NOISE_SIGMAS`` combined standard deviations. A single-seed run has no spread of its own; the profile's
  seed noise (pooled over every baseline measured on two seeds or more) stands in for it.
- ``task_signal``: which benchmark tasks separate mixers at a profile. A task counts when the spread of the
  baselines' mean scores exceeds the pooled spread of one baseline's scores over seeds. At the small profiles the
  zero-shot tasks sit at chance and fail this test; they are reported but carry no weight.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

NOISE_SIGMAS = 2.0
Verdict = Literal["better", "worse", "within noise"]


@dataclass(frozen=True)
class Measured:
    """One quantity (a val loss) over seeds; ``sd`` is None below two seeds."""

    mean: float
    sd: float | None
    seeds: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Measured | None:
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            return None
        return cls(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite))

    def noise(self, floor: float | None) -> float | None:
        """This quantity's own seed spread, or the profile's noise floor where it was measured on one seed."""
        return self.sd if self.sd is not None else floor

    def text(self, digits: int = 4) -> str:
        spread = f" ± {self.sd:.{digits}f}" if self.sd is not None else ""
        return f"{self.mean:.{digits}f}{spread} ({self.seeds} seed{'s' if self.seeds != 1 else ''})"


def best_of(measured: Mapping[str, Measured]) -> str | None:
    """The lowest mean among those measured on two seeds or more (any, if none is): one lucky seed does not make
    a baseline the best."""
    pool = {name: m for name, m in measured.items() if m.seeds > 1} or dict(measured)
    return min(sorted(pool), key=lambda name: pool[name].mean) if pool else None


def combined_noise(a: Measured, b: Measured, floor: float | None) -> float | None:
    noise_a, noise_b = a.noise(floor), b.noise(floor)
    if noise_a is None or noise_b is None:
        return None
    return math.hypot(noise_a, noise_b)


def compare(loss: Measured, other: Measured, floor: float | None) -> Verdict | None:
    """``loss`` against ``other`` (lower is better), beyond ``NOISE_SIGMAS`` combined sd; None without a noise
    estimate (neither has two seeds and no floor is known)."""
    noise = combined_noise(loss, other, floor)
    if noise is None:
        return None
    gap = other.mean - loss.mean
    if abs(gap) <= NOISE_SIGMAS * noise:
        return "within noise"
    return "better" if gap > 0 else "worse"


def in_noise_units(loss: Measured, other: Measured, floor: float | None) -> float | None:
    """How many combined sd ``loss`` is below ``other`` (positive: better)."""
    noise = combined_noise(loss, other, floor)
    if not noise:
        return None
    return (other.mean - loss.mean) / noise


def pooled_sd(groups: Iterable[Sequence[float]]) -> float | None:
    """The within-group standard deviation pooled over every group with two values or more."""
    squares, dof = 0.0, 0
    for values in groups:
        finite = [v for v in values if math.isfinite(v)]
        if len(finite) > 1:
            squares += statistics.variance(finite) * (len(finite) - 1)
            dof += len(finite) - 1
    return math.sqrt(squares / dof) if dof else None


# --- benchmark tasks that carry signal ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSignal:
    task: str
    between_sd: float | None  # spread of the baselines' mean scores
    within_sd: float | None  # seed-to-seed spread of one baseline's score, pooled
    mixers: int  # baselines that measured the task
    counts: bool

    def reason(self) -> str:
        if self.between_sd is None or self.within_sd is None:
            return "needs two baselines, one of them on two seeds"
        sign = ">" if self.counts else "<="
        return f"across baselines {self.between_sd:.4f} {sign} across seeds {self.within_sd:.4f}"


SeedScores = Mapping[str, Mapping[str, float]]  # seed -> task -> score


def task_signal(baselines: Mapping[str, SeedScores]) -> dict[str, TaskSignal]:
    """Per task, whether the baselines' scores (mixer -> seed -> task -> score) separate beyond seed noise."""
    tasks = sorted({task for seeds in baselines.values() for scores in seeds.values() for task in scores})
    return {task: _signal(task, baselines) for task in tasks}


def _signal(task: str, baselines: Mapping[str, SeedScores]) -> TaskSignal:
    per_mixer = [[float(s[task]) for s in seeds.values() if task in s and math.isfinite(float(s[task]))]
                 for seeds in baselines.values()]
    per_mixer = [values for values in per_mixer if values]
    means = [statistics.fmean(values) for values in per_mixer]
    between = statistics.stdev(means) if len(means) > 1 else None
    within = pooled_sd(per_mixer)
    # A task every seed of every baseline scores the same on (0 everywhere, say) has no spread at all: no signal.
    counts = between is not None and within is not None and between > within and between > 0
    return TaskSignal(task=task, between_sd=between, within_sd=within, mixers=len(per_mixer), counts=counts)


def signal_mean(benchmarks: Mapping[str, float], tasks: Iterable[str]) -> float | None:
    """The mean score over the tasks that carry signal; None when the run measured none of them."""
    values = [float(benchmarks[t]) for t in tasks if t in benchmarks and math.isfinite(float(benchmarks[t]))]
    return statistics.fmean(values) if values else None
