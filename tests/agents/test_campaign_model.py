"""Agents speak with the model of the latest campaign, also after a restart (read back from the real stream)."""

from __future__ import annotations

import asyncio

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
    assert llm.backend.model_name == "model-b" and loaded == ["model-b"]  # built on first use
    await nc.close()


async def test_concurrent_tasks_of_one_agent_each_speak_with_their_campaigns_model() -> None:
    built: list[str] = []

    def load(model: str) -> LlmBackend:
        built.append(model)
        return ScriptedBackend(["a reply"] * 4, model_name=model)

    llm = LlmClient(ScriptedBackend([], model_name="default"), "test", factory=load)

    async def task(model: str) -> list[str]:
        llm.use_model_in_task(model)
        names = []
        for _ in range(2):
            names.append(llm.backend.model_name)
            _, usage = await llm.complete_text([{"role": "user", "content": "hi"}])
            names.append(usage.model)
            await asyncio.sleep(0)  # the other task runs in between
        return names

    first, second = await asyncio.gather(task("model-a"), task("model-b"))
    assert set(first) == {"model-a"} and set(second) == {"model-b"}
    assert sorted(built) == ["model-a", "model-b"]  # one backend per model, kept
    assert llm.backend.model_name == "default"  # this task named none
