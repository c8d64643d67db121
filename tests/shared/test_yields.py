"""The campaign yield table is a fold over the event log: every row checked on a small scripted history."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.cli.yields import Reference, reference_from_events, rows, tally
from shared.events import (
    Budget,
    CampaignStarted,
    CampaignStopped,
    CurvePoint,
    DebugGaveUp,
    DebugPatched,
    Event,
    JudgeScored,
    LlmUsage,
    MoveLearned,
    MoveStep,
    ProposalCreated,
    ProposalRejected,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
)
from tests.memory.history import baseline_events

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
LLM = LlmUsage(model="m", prompt_tokens=1000, completion_tokens=100, latency_s=10.0)


class History:
    def __init__(self, campaign: str = "c-1") -> None:
        self.campaign = campaign
        self.events: list[Event] = []
        self.seconds = 0

    def at(self, seconds: int) -> dt.datetime:
        self.seconds += seconds
        return T0 + dt.timedelta(seconds=self.seconds)

    def env(self, exp: str, producer: str, after_s: int = 0) -> dict[str, object]:
        return {"event_id": f"{len(self.events):08d}-{self.campaign}", "occurred_at": self.at(after_s),
                "producer": producer, "campaign_id": self.campaign, "experiment_id": exp}

    def add(self, event: Event) -> None:
        self.events.append(event)

    def propose(self, exp: str, move: str = "output-gate", parents: tuple[str, ...] = ()) -> None:
        self.add(ProposalCreated(**self.env(exp, "researcher", 10), name=exp, motivation="m", code="c", profile="smoke",
                                 move=move, llm=LLM, parent_ids=parents))

    def learn(self, exp: str, move_id: str) -> None:
        step = MoveStep(site="forward", anchor="end", instruction="i")
        self.add(MoveLearned(**self.env(exp, "researcher"), move_id=move_id, title=move_id, rationale="r",
                             provenance="cognition:x", steps=(step,)))

    def train(self, exp: str, attempt: int, loss: float | None, seconds: int = 30) -> None:
        self.add(TrainStarted(**self.env(exp, "engineer"), attempt=attempt, worker_host="h", device="cpu"))
        if loss is None:
            self.add(TrainFailed(**self.env(exp, "engineer", seconds), attempt=attempt, error_kind="runtime",
                                 message="boom"))
            return
        self.add(TrainSucceeded(**self.env(exp, "engineer", seconds), attempt=attempt, profile="smoke",
                                curve=(CurvePoint(step=1, tokens=1, loss=loss),), train_loss=loss, val_loss=loss,
                                benchmarks={}, params=1, tokens=1, tokens_per_s=1.0, device="cpu", gpu_seconds=0.0,
                                cpu_core_seconds=60.0, checkpoint_path="x"))

    def patch(self, exp: str, attempt: int) -> None:
        self.add(DebugPatched(**self.env(exp, "debugger", 10), attempt=attempt, diagnosis="d", code="c", diff="",
                              llm=LLM))


def scripted_campaign() -> History:
    h = History()
    h.add(CampaignStarted(**h.env("", "cli"), profile="smoke", budget=Budget(experiments=6), llm_model="m"))
    h.propose("a")
    h.train("a", 1, 5.60)  # first try, beats 5.7 − 2·0.01
    h.propose("b")
    h.train("b", 1, None)
    h.patch("b", 2)
    h.train("b", 2, None)
    h.patch("b", 3)
    h.train("b", 3, 5.75)  # fixed after two patches, within the noise floor
    h.propose("c")
    h.train("c", 1, None)
    h.add(DebugGaveUp(**h.env("c", "debugger", 10), attempts=1, last_error_kind="runtime", last_error="boom",
                      llm=LLM))
    h.add(ProposalRejected(**h.env("d", "researcher", 10), reason="duplicate", detail="cosine 1.0", llm=LLM))
    h.propose("e")
    h.add(ProposalRejected(**h.env("e", "engineer"), reason="causality", detail="peeks"))
    h.propose("f")
    h.add(ProposalRejected(**h.env("f", "engineer"), reason="duplicate", detail="outputs equal the gla baseline's"))
    h.add(JudgeScored(**h.env("a", "judge", 10), performance=5, innovation=5, complexity=5, weighted=5.0,
                      rationale="r", llm=LLM))
    h.add(CampaignStopped(**h.env("", "researcher"), reason="budget reached"))
    return h


def test_every_row_of_the_yield_table_is_counted_from_events() -> None:
    h = scripted_campaign()
    other = History("c-2")
    other.propose("z")
    table = tally([*h.events, *other.events], "c-1", Reference("linear_attention", 5.70, 0.01))
    assert (table.profile, table.model, table.finished) == ("smoke", "m", True)
    # a, b, c, e, f created + d rejected by the researcher; the engineer's rejections (e, f) are not new ones
    assert table.proposed == 6
    assert table.rejected == {"duplicate": 1, "causality": 1, "duplicate outputs": 1}
    assert table.passed_first_try == 1 and table.fixed_after_patches == {2: 1}
    assert table.gave_up == 1 and table.trained == 2 and table.beat_reference == 1
    # Every LLM step: 5 proposals with usage (a, b, c, e, f) + d's rejection + 2 patches + the give-up + the judge.
    assert table.llm.tasks == 10 and table.llm.seconds == pytest.approx(100.0)
    assert table.llm.completion_tokens_per_s == pytest.approx(10.0)
    assert table.training_seconds == pytest.approx(5 * 30)
    assert table.wall_seconds == pytest.approx(h.seconds)
    assert 0 < table.share(table.llm.seconds) < 1
    assert table.proposals_per_hour == pytest.approx(6 * 3600 / h.seconds)
    text = dict(rows(table))
    assert text["fixed by the debugger"] == "1 (1 after 2 patches)"
    assert "5.6800" in text["beat the reference beyond noise"]
    json.dumps(table.as_dict())  # the --json form is plain JSON


def test_moves_learned_and_the_trained_mixers_that_used_them() -> None:
    earlier = History("c-0")
    earlier.learn("old", "learned-old")  # learned by an earlier campaign: reusing it here counts as learned
    h = History()
    h.add(CampaignStarted(**h.env("", "cli"), profile="smoke", budget=Budget(experiments=6), llm_model="m"))
    h.learn("a", "learned-a")
    h.propose("a", "learned-a")
    h.train("a", 1, 5.6)
    h.propose("b", "learned-old")
    h.train("b", 1, 5.6)
    h.propose("c", "free")  # the LLM's own change: not a built-in move either
    h.train("c", 1, 5.6)
    h.propose("d", "output-gate")  # built-in
    h.train("d", 1, 5.6)
    h.learn("e", "learned-e")
    h.propose("e", "learned-e")  # learned, but never trained
    h.train("e", 1, None)
    table = tally([*earlier.events, *h.events], "c-1")
    assert table.trained == 4 and table.moves_learned == 2 and table.trained_with_learned_moves == 3
    assert {"moves_learned": 2, "trained_with_learned_moves": 3}.items() <= table.as_dict().items()
    assert ("moves learned", "2") in rows(table)


def test_the_parents_drawn_and_how_many_were_baselines() -> None:
    h = History()
    h.add(CampaignStarted(**h.env("", "cli"), profile="smoke", budget=Budget(experiments=6), llm_model="m"))
    h.propose("a", parents=("baseline:gla",))
    h.propose("b", parents=("a", "baseline:deltanet"))  # a reference is not a parent drawn
    h.propose("c", parents=("baseline:gla", "a"))
    h.add(ProposalRejected(**h.env("d", "researcher"), reason="duplicate", detail="d", parent_ids=("a",)))
    h.add(ProposalRejected(**h.env("c", "engineer"), reason="causality", detail="peeks", parent_ids=("baseline:gla",)))
    table = tally(h.events, "c-1")
    assert {"distinct_parents": 2, "parents_from_baselines": 2}.items() <= table.as_dict().items()
    assert dict(rows(table))["parents drawn"] == "2 distinct; 2 of 4 proposals from a baseline"


def test_without_a_reference_nothing_is_claimed_to_beat_it() -> None:
    table = tally(scripted_campaign().events, "c-1")
    assert table.beat_reference is None and dict(rows(table))["beat the reference beyond noise"] == "-"


def test_the_reference_is_read_from_the_baseline_events() -> None:
    events: list[Event] = [
        *baseline_events("smoke", "linear_attention", (5.0, 5.2), (0.3, 0.3)),
        *baseline_events("cpu", "linear_attention", (4.0, 9.0), (0.3, 0.3)),  # another profile: not counted
        *baseline_events("smoke", "gla", (4.0,), (0.3,)),
    ]
    ref = reference_from_events(events, "smoke", "linear_attention")
    assert ref is not None and ref.mean == pytest.approx(5.1) and ref.threshold == pytest.approx(5.1 - 2 * 0.1414, 1e-3)
    assert reference_from_events(events, "smoke", "gla") is None  # one seed has no spread
    remeasured = baseline_events("smoke", "linear_attention", (5.4,), (0.3,))  # seed 0 again: its latest counts
    ref = reference_from_events([*events, *remeasured], "smoke", "linear_attention")
    assert ref is not None and ref.mean == pytest.approx(5.3)


def test_runs_that_beat_their_parent_and_the_best_baseline_beyond_noise() -> None:
    """deltanet 5.00/5.02 and gla 4.90/4.91 at smoke: the seed noise is 0.011, so two runs on one seed must
    differ by more than 2·√2·0.011 ≈ 0.032."""
    h = History()
    h.add(CampaignStarted(**h.env("", "cli"), profile="smoke", budget=Budget(experiments=3), llm_model="m"))
    parents = {"a": "baseline:deltanet", "b": "a", "c": "a"}
    for exp, loss in (("a", 4.95), ("b", 4.85), ("c", 4.94)):
        h.add(ProposalCreated(**h.env(exp, "researcher", 10), name=exp, motivation="m", code="c", profile="smoke",
                              parent_ids=(parents[exp],)))
        h.train(exp, 1, loss)
    h.add(ReplicateTrained(**h.env("b", "engineer", 30), seed=1, profile="smoke", succeeded=True, val_loss=4.87,
                           device="cpu", cpu_core_seconds=25.0, wall_seconds=25.0))
    events = [*baseline_events("smoke", "deltanet", (5.0, 5.02), (0.3, 0.3)),
              *baseline_events("smoke", "gla", (4.90, 4.91), (0.3, 0.3), reference=False), *h.events]
    table = tally(events, "c-1")
    # a beats deltanet (0.06), b beats a and gla (over its two seeds, 4.86 ± 0.014); c is within noise of a.
    assert table.beat_parent_beyond_noise == 2 and table.beat_best_baseline_beyond_noise == 1
    assert table.best_baseline == "gla" and table.training_seconds == pytest.approx(3 * 30 + 25)
    keys = json.loads(json.dumps(table.as_dict()))
    assert (keys["beat_parent_beyond_noise"], keys["beat_best_baseline_beyond_noise"]) == (2, 1)
    assert dict(rows(table))["beat the best baseline beyond noise"] == "1 (best baseline: gla)"
    # A promotion to cpu (same code, parent b) is not one of the campaign's smoke results.
    h.add(ProposalCreated(**h.env("b@cpu", "promote", 10), name="b @ cpu", motivation="m", code="c", profile="cpu",
                          parent_ids=("b",)))
    h.add(TrainSucceeded(**h.env("b@cpu", "engineer", 30), attempt=1, profile="cpu", curve=(), train_loss=4.0,
                         val_loss=4.0, benchmarks={}, params=1, tokens=1, tokens_per_s=1.0, device="cpu",
                         gpu_seconds=0.0, cpu_core_seconds=60.0, checkpoint_path="x"))
    promoted = tally([*events, *h.events[-2:]], "c-1")
    assert (promoted.proposed, promoted.promoted, promoted.trained) == (3, 1, 3)
    assert promoted.beat_parent_beyond_noise == 2
    # Without any baseline measured there is no noise to compare with and no best baseline: not claimed.
    bare = tally(h.events, "c-1")
    assert bare.beat_best_baseline_beyond_noise is None and bare.as_dict()["beat_best_baseline_beyond_noise"] is None
    # b's two seeds have a spread of their own, but its parent a's one seed has none: nothing is claimed.
    assert bare.beat_parent_beyond_noise == 0
