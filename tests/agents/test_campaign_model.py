"""Agents speak with the model of the latest campaign, also after a restart (read back from the real stream)."""

from __future__ import annotations

from shared import bus
from shared.agent import follow_latest_campaign
from shared.events import Budget, CampaignStarted, new_event_id, utc_now
from shared.llm import LlmBackend, LlmClient
from tests.agents.conftest import ScriptedBackend


def started(model: str) -> CampaignStarted:
    return CampaignStarted(event_id=new_event_id(), occurred_at=utc_now(), producer="test",
                           campaign_id=f"c-{model}", experiment_id="", profile="smoke",
                           budget=Budget(experiments=1), llm_model=model)


async def test_a_restarted_agent_speaks_with_the_latest_campaigns_model(nats_url: str) -> None:
    nc = await bus.connect(nats_url, "test")
    js = nc.jetstream()
    await bus.ensure_stream(js, duplicate_window_s=600)
    loaded: list[str] = []

    def load(model: str) -> LlmBackend:
        loaded.append(model)
        return ScriptedBackend([], model_name=model)

    llm = LlmClient(ScriptedBackend([], model_name="default"), "test", factory=load)
    await follow_latest_campaign(js, llm)  # no campaign yet: the default stays
    assert loaded == [] and llm.backend.model_name == "default"
    for model in ("model-a", "model-b"):
        await bus.publish(js, started(model))
    await follow_latest_campaign(js, llm)
    assert loaded == ["model-b"] and llm.backend.model_name == "model-b"
    await nc.close()
