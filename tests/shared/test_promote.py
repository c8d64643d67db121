"""Stage two: which runs are promoted, and the rank correlation between the stages."""

from __future__ import annotations

import pytest

from shared.cli.promote import StageAgreement, StagePair, promoted_id, top_runs
from shared.noise import ranks, spearman


def test_the_best_trained_runs_of_the_campaigns_profile_are_promoted() -> None:
    experiments = [
        {"id": "a", "profile": "smoke", "status": "trained", "fitness": 1.2},
        {"id": "b", "profile": "smoke", "status": "trained", "fitness": 1.9},
        {"id": "c", "profile": "smoke", "status": "failed", "fitness": None},
        {"id": "d", "profile": "smoke", "status": "trained", "fitness": 1.5},
        {"id": promoted_id("b", "cpu"), "profile": "cpu", "status": "trained", "fitness": 2.5},
    ]
    assert [e["id"] for e in top_runs(experiments, "smoke", 2)] == ["b", "d"]
    assert promoted_id("b", "cpu") == "b@cpu"


def test_spearman_with_ties_and_too_few_pairs() -> None:
    assert ranks([3.0, 1.0, 2.0, 2.0]) == [4.0, 1.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([5.1, 4.9, 5.3, 5.0, 4.95], [4.2, 4.1, 4.6, 4.3, 4.0]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_agreement_counts_runs_alone_and_with_the_baselines() -> None:
    pairs = [StagePair("a", "run", 5.0, 4.4), StagePair("b", "run", 4.9, 4.3), StagePair("c", "run", 5.1, 4.5),
             StagePair("deltanet", "baseline", 5.4, 4.6), StagePair("mamba2", "baseline", 5.0, 4.7)]
    found = StageAgreement("smoke", "cpu", pairs)
    assert found.correlation("run") == (pytest.approx(1.0), 3)
    rho, n = found.correlation()
    assert n == 5 and rho is not None and -1 <= rho < 1
