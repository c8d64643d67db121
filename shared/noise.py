"""What a measurement can tell apart from seed noise (docs/architecture.md §7).

At the small profiles two seeds of the same mixer differ, and so does every score computed from their runs: a
comparison of single numbers ranks chance. Everything here reads the spread measured over the baselines' seeds:

- ``compare``: whether one val loss is better or worse than another beyond noise, i.e. their means differ by more
  than ``NOISE_SIGMAS`` combined standard deviations. A single-seed run has no spread of its own; the profile's
  seed noise (pooled over every baseline measured on two seeds or more) stands in for it.
- ``task_signal``: which benchmark tasks separate mixers at a profile. A task counts when the spread of the
  baselines' mean scores exceeds what the pooled spread of one baseline's scores over seeds explains (a one-way
  analysis of variance, p below 0.05 corrected for the number of tasks tested). At the small profiles the
  zero-shot tasks sit at chance and fail this test; they are reported but carry no weight.
"""

from __future__ import annotations

import dataclasses
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


# A task counts when the chance that seed noise alone spreads the baselines' means this far is below this.
SIGNAL_P = 0.05
_NO_SPREAD = 1e-9  # below this, seeds agree: a task's scores are not noisy measurements


@dataclass(frozen=True)
class TaskSignal:
    task: str
    between_sd: float | None  # spread of the baselines' mean scores
    within_sd: float | None  # seed-to-seed spread of one baseline's score, pooled
    mixers: int  # baselines that measured the task
    counts: bool
    f: float | None = None  # one-way analysis of variance: between-baseline over within-baseline variance
    p: float | None = None  # the chance of an F this large from seed noise alone
    threshold: float | None = None  # what p is held to among the profile's tasks (Holm)

    def reason(self) -> str:
        if self.p is None:
            return ("needs two baselines, one of them on two seeds, whose seeds do not all score the same "
                    "(a constant answer)")
        relation = "beyond" if self.counts else "within"
        return (f"across baselines sd {self.between_sd:.4f}, across seeds sd {self.within_sd:.4f}: F {self.f:.2f}, "
                f"p {self.p:.4f}, {relation} seed noise (counts below p {self.threshold or SIGNAL_P:.4f})")


SeedScores = Mapping[str, Mapping[str, float]]  # seed -> task -> score


def task_signal(baselines: Mapping[str, SeedScores]) -> dict[str, TaskSignal]:
    """Per task, whether the baselines' scores (mixer -> seed -> task -> score) separate beyond seed noise.

    Many tasks are tested at once, and at p < 0.05 one in twenty tasks at chance would pass: the tasks' p values
    are held to Holm's step-down thresholds (the smallest to 0.05/m, the next to 0.05/(m − 1), …), so the chance
    that any task at chance counts stays below 0.05.
    """
    tasks = sorted({task for seeds in baselines.values() for scores in seeds.values() for task in scores})
    signals = {task: _signal(task, baselines) for task in tasks}
    tested = sorted((s.p, task) for task, s in signals.items() if s.p is not None)
    passing = True
    for rank, (p, task) in enumerate(tested):
        threshold = SIGNAL_P / (len(tested) - rank)
        passing = passing and p < threshold
        signals[task] = dataclasses.replace(signals[task], counts=passing, threshold=threshold)
    return signals


def _signal(task: str, baselines: Mapping[str, SeedScores]) -> TaskSignal:
    """The baselines' spread on a task against their seeds' (a one-way analysis of variance).

    The means of k baselines differ by chance too: seed noise alone spreads them by about the seed sd over √seeds.
    So the test is not "more spread than one seed's", but the F statistic of their variances against the F
    distribution with (k − 1, N − k) degrees of freedom.
    """
    groups = [[float(s[task]) for s in seeds.values() if task in s and math.isfinite(float(s[task]))]
              for seeds in baselines.values()]
    groups = [values for values in groups if values]
    means = [statistics.fmean(values) for values in groups]
    between = statistics.stdev(means) if len(means) > 1 else None
    within = pooled_sd(groups)
    n = sum(len(values) for values in groups)
    k = len(groups)
    if between is None or within is None or n - k < 1:
        return TaskSignal(task, between, within, k, counts=False)
    grand = statistics.fmean(v for values in groups for v in values)
    between_var = sum(len(values) * (mean - grand) ** 2 for values, mean in zip(groups, means, strict=True)) / (k - 1)
    if within <= _NO_SPREAD:
        # Every seed of every baseline scores the same (BoolQ at 0.37 everywhere, LAMBADA at 0): a constant answer,
        # not a measurement of the mixer; the spread between baselines is then rounding, or a constant too.
        return TaskSignal(task, between, within, k, counts=False)
    f = between_var / within**2
    # Whether it counts is decided against the other tasks' p values (task_signal).
    return TaskSignal(task, between, within, k, counts=False, f=f, p=f_survival(f, k - 1, n - k))


def f_survival(f: float, d1: int, d2: int) -> float:
    """P(F ≥ f) for an F distribution with (d1, d2) degrees of freedom: I_x(d2/2, d1/2), x = d2 / (d2 + d1·f)."""
    if f <= 0:
        return 1.0
    return regularized_beta(d2 / (d2 + d1 * f), d2 / 2, d1 / 2)


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1.0 - regularized_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-12:
            break
    return math.exp(log_front) * fraction / a


def signal_mean(benchmarks: Mapping[str, float], tasks: Iterable[str]) -> float | None:
    """The mean score over the tasks that carry signal; None when the run measured none of them."""
    values = [float(benchmarks[t]) for t in tasks if t in benchmarks and math.isfinite(float(benchmarks[t]))]
    return statistics.fmean(values) if values else None


# --- agreement between two stages -----------------------------------------------------------------------------------


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            result[i] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired values; None below three pairs or when one side has no spread."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} values paired with {len(ys)}")
    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else None
