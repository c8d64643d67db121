"""docs/architecture.md §7 in code: ASI-Arch's composite fitness against locally measured baselines.

``total = σ(6·clip((L_base − L)/(0.1·L_base), −1, 1)) + σ(6·clip((B − B_base)/(0.1·B_base), −1, 1)) + (w − 1)/9``
with ``w`` the weighted score the judge published, ``L`` the experiment's val loss (its mean over the seeds it was
trained on), and ``B`` its mean score over the benchmark tasks that carry signal at the profile (shared/noise.py):
where ASI-Arch averages every benchmark, a task on which the baselines do not differ beyond seed noise adds only
chance here, so it is reported but not counted, and where no task carries signal the term is neutral (σ(0)). The
baseline is the mean over ≥ 2 seeds of the profile's fitness reference, projected into the ``baselines``
collection from the ``baseline.measured`` events that ``asiarch baselines`` publishes. Until a baseline for the
experiment's profile exists no fitness is emitted: a number against a made-up reference would be ranked next to
real ones and could never be told apart later.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pymongo.database import Database

from services.memory.projection import BASELINE_MIXERS, BASELINES, EXPERIMENTS, bench_mean
from shared.events import NO_ISLAND, Event, FitnessComputed, caused_by
from shared.judging import anchor_of, score_of, weighted
from shared.mixer.baselines import BASELINES as BUILT_IN
from shared.mixer.baselines import QUADRATIC, baseline_ref
from shared.noise import Measured, signal_mean

log = logging.getLogger(__name__)

PRODUCER = "memory"
MIN_BASELINE_SEEDS = 2
# The relative improvement (10 %) that saturates a term, and the sigmoid's steepness, from ASI-Arch.
_SCALE = 0.1
_STEEPNESS = 6.0


@dataclass(frozen=True)
class Baseline:
    profile: str
    val_loss_mean: float
    val_loss_std: float
    seeds: int
    signal_tasks: tuple[str, ...]
    # The reference's mean score over the signal tasks (None when no task carries signal).
    signal_bench: float | None


@dataclass(frozen=True)
class FitnessTerms:
    loss_term: float
    benchmark_term: float
    judge_term: float
    total: float


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip(x: float, low: float = -1.0, high: float = 1.0) -> float:
    return max(low, min(high, x))


def loss_term(val_loss: float, baseline_loss: float) -> float:
    """Lower loss is better; a non-finite loss (a diverged run) scores as the worst clipped value."""
    if not math.isfinite(val_loss):
        return sigmoid(-_STEEPNESS)
    if baseline_loss <= 0 or not math.isfinite(baseline_loss):
        raise ValueError(f"baseline loss must be a positive number, got {baseline_loss}")
    return sigmoid(_STEEPNESS * _clip((baseline_loss - val_loss) / (_SCALE * baseline_loss)))


def benchmark_term(bench: float | None, baseline_bench: float | None) -> float:
    """Higher is better. Without benchmark scores (or a zero baseline) the term is neutral, σ(0) = 0.5."""
    if bench is None or baseline_bench is None or baseline_bench <= 0 or not math.isfinite(baseline_bench):
        return 0.5
    if not math.isfinite(bench):
        return sigmoid(-_STEEPNESS)
    return sigmoid(_STEEPNESS * _clip((bench - baseline_bench) / (_SCALE * baseline_bench)))


def judge_term(weighted: float) -> float:
    """(w − 1)/9 maps the judge's 1–10 weighted score onto 0–1."""
    if not 1 <= weighted <= 10:
        raise ValueError(f"the judge's weighted score {weighted} is outside 1–10")
    return (weighted - 1.0) / 9.0


def fitness_terms(
    val_loss: float,
    bench: float | None,
    baseline_loss: float,
    baseline_bench: float | None,
    judge_weighted: float,
) -> FitnessTerms:
    """The three terms and their sum for one experiment against its profile's baseline."""
    lt = loss_term(val_loss, baseline_loss)
    bt = benchmark_term(bench, baseline_bench)
    jt = judge_term(judge_weighted)
    return FitnessTerms(loss_term=lt, benchmark_term=bt, judge_term=jt, total=lt + bt + jt)


# --- baselines ----------------------------------------------------------------------------------------------------


def get_baseline(db: Database, profile: str) -> Baseline | None:
    """The profile's fitness reference, once at least two of its seeds are measured."""
    doc = db[BASELINES].find_one({"_id": profile})
    if doc is None or doc.get("seeds", 0) < MIN_BASELINE_SEEDS or doc.get("val_loss_mean") is None:
        return None
    tasks = tuple(doc.get("signal_tasks") or ())
    per_seed = [signal_mean(run.get("benchmarks") or {}, tasks) for run in doc["runs"].values()]
    measured = [b for b in per_seed if b is not None]
    return Baseline(profile=profile, val_loss_mean=doc["val_loss_mean"], val_loss_std=doc["val_loss_std"],
                    seeds=doc["seeds"], signal_tasks=tasks,
                    signal_bench=statistics.fmean(measured) if measured and tasks else None)


# --- the event ----------------------------------------------------------------------------------------------------


def terms_for(experiment: Mapping[str, Any], baseline: Baseline) -> FitnessTerms | None:
    """Fitness of a projected experiment document, or None while it lacks training results or judge scores."""
    judge, val_loss = experiment.get("judge"), experiment.get("val_loss")
    if judge is None or experiment.get("train") is None:
        return None
    return fitness_terms(
        val_loss=float("nan") if val_loss is None else float(val_loss),
        bench=signal_mean(experiment.get("benchmarks") or {}, baseline.signal_tasks),
        baseline_loss=baseline.val_loss_mean, baseline_bench=baseline.signal_bench, judge_weighted=judge["weighted"],
    )


def fitness_event(db: Database, cause: Event, experiment: Mapping[str, Any] | None = None) -> FitnessComputed | None:
    """The ``fitness.computed`` event owed after ``cause`` (usually train.succeeded or judge.scored) was projected.

    None while the experiment lacks either result, or while its profile has no measured baseline (logged). The
    envelope is derived from ``cause``, so a re-run emits the same event id and the server keeps one copy.
    """
    doc = experiment if experiment is not None else db[EXPERIMENTS].find_one({"_id": cause.experiment_id})
    if doc is None or doc.get("train") is None or doc.get("judge") is None:
        return None
    profile = doc.get("profile") or doc["train"].get("profile", "")
    baseline = get_baseline(db, profile)
    if baseline is None:
        log.warning("no baseline measured for profile %r: no fitness for %s yet (run `asiarch baselines`)",
                    profile, cause.experiment_id)
        return None
    terms = terms_for(doc, baseline)
    if terms is None:
        return None
    return FitnessComputed(**caused_by(cause, PRODUCER), **asdict(terms))  # type: ignore[arg-type]


# --- the baselines as parents -------------------------------------------------------------------------------------


def baseline_entries(db: Database, profile: str) -> list[dict[str, Any]]:
    """The profile's measured sub-quadratic built-in baselines in the form of ranked experiment documents, so that
    parent sampling ranks them beside a campaign's runs instead of dropping them once one run ranks (a campaign's
    first weak run was otherwise the parent of every proposal after it).

    Each is scored as a run equal to it would be: the loss and benchmark terms against the fitness reference, the
    judge term from the judge's own rule (its performance among the baselines, its anchor's innovation and
    complexity). None before the profile has a fitness reference, as no run has a fitness then either.
    """
    reference = get_baseline(db, profile)
    if reference is None:
        return []
    mixers = [d for d in db[BASELINE_MIXERS].find({"profile": profile}) if d.get("val_loss_mean") is not None]
    measured = {d["mixer"]: Measured(d["val_loss_mean"], d.get("val_loss_std"), d.get("seeds", 0)) for d in mixers}
    floor = (db[BASELINES].find_one({"_id": profile}) or {}).get("noise_sd")
    parents = [d for d in mixers if d["mixer"] in BUILT_IN and d["mixer"] not in QUADRATIC]
    return [_baseline_entry(d, measured, floor, reference) for d in sorted(parents, key=lambda d: d["mixer"])]


def _baseline_entry(mixer: Mapping[str, Any], measured: Mapping[str, Measured], floor: float | None,
                    reference: Baseline) -> dict[str, Any]:
    name = mixer["mixer"]
    runs = [r for r in (mixer.get("runs") or {}).values() if r.get("val_loss") is not None]
    tasks = sorted({task for r in runs for task in r.get("benchmarks") or {}})
    benchmarks = {t: statistics.fmean(r["benchmarks"][t] for r in runs if t in r["benchmarks"]) for t in tasks}
    _, innovation, complexity = anchor_of(name)
    judged = weighted(score_of(measured[name].mean, measured, floor), innovation, complexity)
    terms = fitness_terms(val_loss=measured[name].mean, bench=signal_mean(benchmarks, reference.signal_tasks),
                          baseline_loss=reference.val_loss_mean, baseline_bench=reference.signal_bench,
                          judge_weighted=judged)
    return {**unranked_baseline_entry(name, mixer["profile"]), "fitness_total": terms.total,
            "val_loss": measured[name].mean, "val_loss_sd": measured[name].sd, "seeds": measured[name].seeds,
            "benchmarks": benchmarks, "bench_mean": bench_mean(benchmarks)}


def unranked_baseline_entry(name: str, profile: str) -> dict[str, Any]:
    """A built-in baseline in the parent pool with no fitness (not measured at the profile)."""
    return {"_id": baseline_ref(name), "campaign_id": "", "name": name, "status": "baseline", "parent_ids": [],
            "profile": profile, "fitness_total": None, "island": NO_ISLAND, "n_children": 0, "baseline": True}
