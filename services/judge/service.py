"""Judge's settings and wiring."""

from __future__ import annotations

from functools import partial

from services.judge.handlers import Scorer, Scores, on_train_succeeded
from shared.events import TrainSucceeded
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


class JudgeSettings(ServiceSettings):
    service_name: str = "judge"


class UnconfiguredScorer:
    """Until an LLM is configured: a neutral score that says so, rather than a silent gap in the record."""

    async def score(self, run: TrainSucceeded) -> Scores:
        return Scores(performance=5, innovation=5, complexity=5, rationale="no LLM judge configured: neutral scores")


async def bootstrap(runtime: Runtime) -> Wiring:
    scorer: Scorer = UnconfiguredScorer()
    return Wiring(handlers={TrainSucceeded: partial(on_train_succeeded, scorer)})


SPEC = ServiceSpec(name="judge", settings_type=JudgeSettings, bootstrap=bootstrap)
