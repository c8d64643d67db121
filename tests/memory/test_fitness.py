"""Fitness (docs/architecture.md §7): the formula at its boundaries, baselines from events, fitness.computed."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict

import pytest
from pymongo.database import Database

from services.memory.fitness import (
    Baseline,
    baseline_entries,
    benchmark_term,
    fitness_event,
    fitness_terms,
    get_baseline,
    judge_term,
    loss_term,
    sigmoid,
    terms_for,
)
from services.memory.projection import Projector
from shared.events import FitnessComputed, JudgeScored, TrainSucceeded
from shared.judging import anchor_of, weighted
from shared.noise import f_survival, task_signal
from tests.memory.history import baseline_events, build_history, numbered

LOW, HIGH = sigmoid(-6), sigmoid(6)


def test_equal_to_the_baseline_scores_half_plus_half_plus_judge() -> None:
    w = 0.3 * 5 + 0.25 * 6 + 0.45 * 7
    terms = fitness_terms(4.0, 0.3, 4.0, 0.3, judge_weighted=w)
    assert terms.loss_term == terms.benchmark_term == 0.5
    assert terms.judge_term == pytest.approx((w - 1) / 9)
    assert terms.total == pytest.approx(1.0 + (w - 1) / 9)


@pytest.mark.parametrize(("loss", "expected"), [
    (3.6, HIGH),             # exactly 10 % better: clip boundary
    (3.0, HIGH),             # far better: clipped
    (4.4, LOW),              # exactly 10 % worse
    (9.0, LOW),              # far worse: clipped
    (3.8, sigmoid(3.0)),     # 5 % better: halfway
    (float("nan"), LOW),     # a diverged run is the worst
])
def test_loss_term(loss: float, expected: float) -> None:
    assert loss_term(loss, 4.0) == pytest.approx(expected)


@pytest.mark.parametrize(("bench", "expected"), [
    (0.33, HIGH), (0.5, HIGH), (0.27, LOW), (0.0, LOW), (0.315, sigmoid(3.0)), (None, 0.5),
])
def test_benchmark_term(bench: float | None, expected: float) -> None:
    assert benchmark_term(bench, 0.3) == pytest.approx(expected)


def test_benchmark_term_is_neutral_without_a_baseline_score() -> None:
    assert benchmark_term(0.4, 0.0) == benchmark_term(0.4, None) == 0.5


def test_judge_term_range_and_validation() -> None:
    assert judge_term(1) == pytest.approx(0.0)
    assert judge_term(10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside 1–10"):
        judge_term(0.5)


def test_total_bounds() -> None:
    best = fitness_terms(1.0, 1.0, 4.0, 0.3, 10)
    worst = fitness_terms(8.0, 0.0, 4.0, 0.3, 1)
    assert best.total == pytest.approx(2 * HIGH + 1) and worst.total == pytest.approx(2 * LOW)
    with pytest.raises(ValueError, match="positive"):
        loss_term(3.0, 0.0)


def test_the_reference_is_projected_from_two_seeds_of_its_events(db: Database) -> None:
    projector = Projector(db)
    first, second = baseline_events("smoke", "deltanet", (4.0, 4.2), (0.3, 0.32))
    projector.apply(first, 1)
    assert get_baseline(db, "smoke") is None  # one seed has no spread: no reference yet
    projector.apply(second, 2)
    baseline = get_baseline(db, "smoke")
    assert baseline is not None and baseline.seeds == 2 and baseline.val_loss_mean == pytest.approx(4.1)
    assert baseline.val_loss_std == pytest.approx(math.sqrt(0.02))
    assert baseline.signal_tasks == () and baseline.signal_bench is None  # one baseline separates nothing
    assert get_baseline(db, "cpu") is None
    # Another baseline measured beside it is projected too, but is not the fitness reference. Its scores differ
    # from the reference's by more than either's seeds do: now the tasks carry signal.
    for seq, event in enumerate(baseline_events("smoke", "gla", (3.0, 3.1), (0.4, 0.4), reference=False), 3):
        projector.apply(event, seq)
    assert get_baseline(db, "smoke") == Baseline(**{**asdict(baseline), "signal_tasks": ("mqar", "piqa"),
                                                    "signal_bench": pytest.approx(0.31)})
    assert db["baseline_mixers"].find_one({"_id": "smoke/gla"})["val_loss_mean"] == pytest.approx(3.05)
    # A new reference mixer starts over rather than averaging with the old one's seeds.
    projector.apply(baseline_events("smoke", "gated_deltanet", (3.5,), (0.3,))[0], 5)
    assert get_baseline(db, "smoke") is None


def test_fitness_event_waits_for_a_baseline_then_matches_the_history(db: Database,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    history = numbered(build_history())
    projector = Projector(db)
    judged = next(i for i, (_, e) in enumerate(history) if isinstance(e, JudgeScored))
    projector.apply_all(history[: judged + 1])
    cause = history[judged][1]
    assert fitness_event(db, cause) is None
    assert "no baseline" in caplog.text
    projector.apply_all(numbered(baseline_events(), start=len(history) + 1))
    event = fitness_event(db, cause)
    assert isinstance(event, FitnessComputed)
    expected = next(e for _, e in history[judged:] if isinstance(e, FitnessComputed)
                    and e.experiment_id == cause.experiment_id)
    assert event.total == pytest.approx(expected.total)
    assert event.causation_id == cause.event_id and event.producer == "memory"
    assert fitness_event(db, cause).event_id == event.event_id  # a re-run emits the same id: deduplicated


def test_no_fitness_before_both_results(db: Database) -> None:
    history = numbered([*baseline_events(), *build_history()])
    trained = next(i for i, (_, e) in enumerate(history) if isinstance(e, TrainSucceeded))
    Projector(db).apply_all(history[: trained + 1])
    assert fitness_event(db, history[trained][1]) is None


def scores(*per_seed: float, task: str = "mqar") -> dict[str, dict[str, float]]:
    return {str(seed): {task: score} for seed, score in enumerate(per_seed)}


def test_a_task_counts_when_the_baselines_differ_beyond_their_seeds() -> None:
    separating = task_signal({"deltanet": scores(0.30, 0.32), "gla": scores(0.40, 0.41)})["mqar"]
    assert separating.counts and separating.between_sd == pytest.approx(statistics.stdev([0.31, 0.405]))
    noisy = task_signal({"deltanet": scores(0.50, 0.56), "gla": scores(0.55, 0.52)})["mqar"]
    assert not noisy.counts and noisy.within_sd > noisy.between_sd
    # At chance everywhere (LAMBADA at 0 on every seed) there is no spread at all: no signal either.
    assert not task_signal({"deltanet": scores(0.0, 0.0), "gla": scores(0.0, 0.0)})["mqar"].counts
    # One baseline, or none on two seeds, cannot show signal.
    assert not task_signal({"deltanet": scores(0.3, 0.5)})["mqar"].counts
    assert not task_signal({"deltanet": scores(0.3), "gla": scores(0.5)})["mqar"].counts


def test_the_profile_keeps_its_noise_floor_best_baseline_and_signal(db: Database) -> None:
    projector = Projector(db)
    events = [*baseline_events("smoke", "deltanet", (4.0, 4.2), (0.3, 0.32)),
              *baseline_events("smoke", "gla", (3.0, 3.1), (0.4, 0.4), reference=False)]
    projector.apply_all(numbered(events))
    doc = db["baselines"].find_one({"_id": "smoke"})
    assert doc["best"]["mixer"] == "gla" and doc["best"]["mean"] == pytest.approx(3.05)
    assert doc["noise_sd"] == pytest.approx(math.sqrt((0.02 + 0.005) / 2))
    assert doc["signal_tasks"] == ["mqar", "piqa"] and "across baselines" in doc["signal"]["mqar"]["reason"]


def test_the_benchmark_term_counts_only_the_tasks_with_signal(db: Database) -> None:
    history = numbered([*baseline_events("smoke", "deltanet", (4.0, 4.2), (0.3, 0.32)),
                        *baseline_events("smoke", "gla", (3.0, 3.1), (0.4, 0.4), reference=False)])
    Projector(db).apply_all(history)
    baseline = get_baseline(db, "smoke")
    assert baseline is not None
    judged = {"weighted": 5.5}
    chance_only = {"val_loss": 4.1, "train": {}, "judge": judged, "benchmarks": {"lambada": 0.9}}
    assert terms_for(chance_only, baseline).benchmark_term == 0.5  # lambada carries no signal: ignored
    better = {**chance_only, "benchmarks": {"mqar": 0.341, "piqa": 0.341, "lambada": 0.0}}
    assert terms_for(better, baseline).benchmark_term == pytest.approx(sigmoid(6 * 1.0), rel=1e-3)


def test_a_baseline_is_ranked_as_the_judge_would_score_a_run_equal_to_it(db: Database) -> None:
    events = [*baseline_events("smoke", "deltanet", (4.0, 4.2), (0.3, 0.32)),
              *baseline_events("smoke", "gla", (3.0, 3.1), (0.4, 0.4), reference=False),
              *baseline_events("smoke", "softmax_attention", (2.9, 3.0), (0.4, 0.4), reference=False)]
    projector = Projector(db)
    projector.apply(events[0], 1)
    assert baseline_entries(db, "smoke") == []  # no fitness reference yet: nothing is ranked, runs nor baselines
    projector.apply_all(numbered(events[1:], start=2))
    entries = {e["name"]: e for e in baseline_entries(db, "smoke")}
    assert sorted(entries) == ["deltanet", "gla"]  # the quadratic reference is measured but never a parent
    assert baseline_entries(db, "cpu") == []
    gla, deltanet = entries["gla"], entries["deltanet"]
    assert gla["_id"] == "baseline:gla" and gla["baseline"] and gla["val_loss"] == pytest.approx(3.05)
    # deltanet is the reference and the worst baseline (performance 3); gla is 0.95 better than it, beyond 10 %.
    _, innovation, complexity = anchor_of("deltanet")
    judged = (weighted(3, innovation, complexity) - 1) / 9
    assert deltanet["fitness_total"] == pytest.approx(0.5 + 0.5 + judged)
    assert gla["fitness_total"] > deltanet["fitness_total"]
    assert gla["benchmarks"] == {"mqar": pytest.approx(0.4), "piqa": pytest.approx(0.4)}


@pytest.mark.parametrize(("f", "d1", "d2", "p"), [  # reference values of the F distribution's survival function
    (2.5, 6, 7, 0.128051), (29.6, 6, 7, 0.000124), (4.96, 6, 7, 0.027103), (1.0, 1, 2, 0.42265), (10, 1, 1, 0.194982),
    (0.3, 3, 10, 0.82474), (100, 2, 3, 0.001797),
])
def test_the_f_test_matches_the_f_distribution(f: float, d1: int, d2: int, p: float) -> None:
    assert f_survival(f, d1, d2) == pytest.approx(p, abs=1e-6)


def test_seven_baselines_at_chance_do_not_make_a_task_count_by_their_number() -> None:
    """Seed noise alone spreads the means of many baselines: more spread than one seed's is not yet signal
    (the smoke numbers of ARC-Challenge: sd 0.037 across 7 baselines, 0.033 across seeds, p 0.13)."""
    noisy = task_signal({f"m{i}": scores(0.25 + 0.04 * (i % 3 - 1), 0.25 + 0.04 * ((i + 1) % 3 - 1))
                         for i in range(7)})["mqar"]
    assert noisy.between_sd is not None and noisy.within_sd is not None
    assert not noisy.counts and noisy.p is not None and noisy.p > 0.05


def test_many_tasks_tested_at_once_are_held_to_a_stricter_threshold() -> None:
    """A task at p 0.03 passes when tested alone, not as one of three (Holm: 0.05/3, then 0.05/2, then 0.05)."""
    seeds = {"deltanet": {"0": {"piqa": 0.50, "mqar": 0.30, "siqa": 0.33}, "1": {"piqa": 0.52, "mqar": 0.31,
                                                                                "siqa": 0.36}},
             "gla": {"0": {"piqa": 0.58, "mqar": 0.60, "siqa": 0.35}, "1": {"piqa": 0.60, "mqar": 0.61, "siqa": 0.33}}}
    alone = task_signal({m: {s: {"piqa": v["piqa"]} for s, v in runs.items()} for m, runs in seeds.items()})
    assert alone["piqa"].counts and alone["piqa"].p is not None and 0.025 < alone["piqa"].p < 0.05
    together = task_signal(seeds)
    assert together["mqar"].counts and together["mqar"].threshold == pytest.approx(0.05 / 3)
    assert not together["piqa"].counts and together["piqa"].threshold == pytest.approx(0.025)
    assert not together["siqa"].counts


def test_a_constant_answer_everywhere_is_no_signal_even_with_rounding() -> None:
    """BoolQ at cpu: 0.37 on every seed of every baseline; the means differ only by floating-point rounding."""
    constant = task_signal({"deltanet": scores(0.37, 0.37), "gla": scores(0.37, 0.37), "mamba2": scores(0.37, 0.37)})
    assert not constant["mqar"].counts and constant["mqar"].p is None and "constant" in constant["mqar"].reason()
