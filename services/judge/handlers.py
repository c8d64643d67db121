"""Judge's handler: the LLM gives three 1–10 scores; the weighted score is computed here, never by the LLM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.bus import Delivery
from shared.events import Event, JudgeScored, LlmUsage, ReplicateTrained, TrainSucceeded, caused_by
from shared.judging import WEIGHTS, weighted

PRODUCER = "judge"


@dataclass(frozen=True)
class Scores:
    performance: int
    innovation: int
    complexity: int
    rationale: str
    llm: LlmUsage | None = None

    def __post_init__(self) -> None:
        for name in WEIGHTS:
            value = getattr(self, name)
            if not 1 <= value <= 10:
                raise ValueError(f"{name} score {value} is outside 1–10")

    def weighted(self) -> float:
        return weighted(self.performance, self.innovation, self.complexity)


class Scorer(Protocol):
    async def score(self, run: TrainSucceeded, as_of: int) -> Scores:
        """Scores for the run, reading memory as of stream sequence ``as_of`` (the run's own event)."""
        ...


async def on_train_succeeded(scorer: Scorer, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, TrainSucceeded)
    scores = await scorer.score(event, as_of=delivery.stream_seq)
    return (scored_event(event, scores),)


def scored_event(cause: Event, scores: Scores) -> JudgeScored:
    return JudgeScored(
        **caused_by(cause, PRODUCER), performance=scores.performance, innovation=scores.innovation,
        complexity=scores.complexity, weighted=scores.weighted(), rationale=scores.rationale, llm=scores.llm,
    )


class Rescorer(Protocol):
    async def rescore(self, replicate: ReplicateTrained, as_of: int) -> Scores | None:
        """The run's scores with its performance re-derived from its results over seeds; None when it has no
        judgement to revise."""
        ...


async def on_replicate_trained(scorer: Rescorer, event: Event, delivery: Delivery) -> Sequence[Event]:
    """A second seed moves the run's mean: its performance is derived again, the LLM's scores kept (no LLM call)."""
    assert isinstance(event, ReplicateTrained)
    if not event.succeeded:
        return ()
    scores = await scorer.rescore(event, as_of=delivery.stream_seq)
    if scores is None:
        return ()
    return (scored_event(event, scores),)
