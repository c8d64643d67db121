"""Noise-aware acceptance: a run entering its profile's top k on one seed is asked for on a second seed."""

from __future__ import annotations

import statistics

import pytest
from pymongo.database import Database

from services.memory.handlers import Memory
from services.memory.projection import Projector
from services.memory.queries import sample_parents
from services.memory.vectors import HashingEmbedder, VectorStore
from shared.events import Event, FitnessComputed, JudgeScored, ReplicateRequested, ReplicateTrained
from tests.agents.lineage import baselines, child, envelope

LOSSES = {"exp-a": 3.90, "exp-b": 3.95, "exp-c": 3.97, "exp-d": 4.10}


class Feed:
    """Events through memory's own path (project, then publish what it owes) in stream order."""

    def __init__(self, db: Database) -> None:
        self.memory = Memory(Projector(db), VectorStore(HashingEmbedder()), replicate_top_k=3)
        self.seq = 0
        self.owed: list[Event] = []

    def __call__(self, *events: Event) -> list[Event]:
        owed: list[Event] = []
        queue = list(events)
        while queue:
            self.seq += 1
            event = queue.pop(0)
            out = self.memory.apply(event, self.seq)
            if out is not None:
                owed.append(out)
                queue.append(out)  # memory's own events come back to it from the stream
        self.owed += owed
        return owed


def judged(experiment: str) -> JudgeScored:
    return JudgeScored(**envelope(experiment), performance=5, innovation=5, complexity=5, weighted=5.0,
                       rationale="performance 5: x\nfine")


@pytest.fixture
def feed(db: Database) -> Feed:
    feed = Feed(db)
    feed(*baselines({"deltanet": (4.00, 4.02)}))
    for experiment, loss in LOSSES.items():
        feed(*child(experiment, "baseline:deltanet", loss), judged(experiment))
    return feed


def test_the_top_three_on_one_seed_are_asked_for_again_once(feed: Feed, db: Database) -> None:
    asked = [e for e in feed.owed if isinstance(e, ReplicateRequested)]
    assert {e.experiment_id for e in asked} == {"exp-a", "exp-b", "exp-c"}  # exp-d entered at rank 4
    assert all(e.seed == 1 and e.profile == "smoke" and e.code for e in asked)
    assert "ranks 1 of the smoke leaderboard" in next(e.reason for e in asked if e.experiment_id == "exp-a")
    # Another fitness for the same run (the judge re-scoring) asks for nothing more.
    again = feed(judged("exp-a"))
    assert [type(e) for e in again] == [FitnessComputed]
    # Waiting runs are not drawn as parents; the rest are.
    sample = sample_parents(db, seed=0)
    assert sample.parent is not None and sample.parent["_id"] == "exp-d" and sample.ranked == 1


def test_the_second_seed_makes_a_mean_and_a_spread(feed: Feed, db: Database) -> None:
    feed(ReplicateTrained(**envelope("exp-a"), seed=1, profile="smoke", succeeded=True, val_loss=3.96,
                          benchmarks={}, cpu_core_seconds=20.0))
    doc = db["experiments"].find_one({"_id": "exp-a"})
    assert doc["seeds"] == 2 and doc["val_loss"] == pytest.approx(3.93)
    assert doc["val_loss_sd"] == pytest.approx(statistics.stdev([3.90, 3.96]))
    assert doc["replicate"]["status"] == "trained" and not doc["awaiting_replicate"]
    assert doc["train"]["val_loss"] == pytest.approx(3.90)  # the first run's own record stays as it was
    # A seed that fails is recorded as the mixer's instability, beside the mean of those that trained.
    feed(ReplicateTrained(**envelope("exp-b"), seed=1, profile="smoke", succeeded=False, error_kind="nan",
                          message="loss is NaN at step 40"))
    doc = db["experiments"].find_one({"_id": "exp-b"})
    assert (doc["seeds"], doc["failed_seeds"], doc["val_loss"]) == (1, 1, pytest.approx(3.95))
    assert doc["replicate"]["status"] == "failed" and "NaN" in doc["seed_runs"]["1"]["error"]
