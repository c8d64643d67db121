"""Judge's settings and wiring."""

from __future__ import annotations

from functools import partial

from services.judge.handlers import on_replicate_trained, on_train_succeeded
from services.judge.scorer import LlmScorer
from shared.agent import AgentSettings, agent_clients, follow_campaign_model
from shared.events import CampaignStarted, ReplicateTrained, TrainSucceeded
from shared.service import Runtime, ServiceSpec, Wiring
from shared.trajectory import recorded


class JudgeSettings(AgentSettings):
    service_name: str = "judge"


async def bootstrap(runtime: Runtime) -> Wiring:
    llm, memory = await agent_clients(runtime)
    scorer = LlmScorer(llm, memory)
    return Wiring(handlers={TrainSucceeded: recorded(runtime.settings.service_name,
                                                     partial(on_train_succeeded, scorer)),
                            ReplicateTrained: partial(on_replicate_trained, scorer),  # no LLM: nothing to record
                            CampaignStarted: partial(follow_campaign_model, llm)})


SPEC = ServiceSpec(name="judge", settings_type=JudgeSettings, bootstrap=bootstrap)
