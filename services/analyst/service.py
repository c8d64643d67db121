"""Analyst's settings and wiring."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from services.analyst.handlers import Analyst, on_replicate_trained, on_train_succeeded
from shared.agent import AgentSettings, agent_clients, follow_campaign_model
from shared.events import CampaignStarted, ReplicateTrained, TrainSucceeded
from shared.service import Runtime, ServiceSpec, Wiring
from shared.trajectory import recorded


class AnalystSettings(AgentSettings):
    service_name: str = "analyst"
    gallery_dir: Path | None = None

    def gallery(self) -> Path:
        return self.gallery_dir or self.data_dir / "gallery"


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, AnalystSettings)
    llm, memory = await agent_clients(runtime)
    analyst = Analyst(llm=llm, memory=memory, gallery=settings.gallery())
    return Wiring(handlers={TrainSucceeded: recorded(settings.service_name, partial(on_train_succeeded, analyst)),
                            ReplicateTrained: partial(on_replicate_trained, analyst),  # no LLM: nothing to record
                            CampaignStarted: partial(follow_campaign_model, llm)})


SPEC = ServiceSpec(name="analyst", settings_type=AnalystSettings, bootstrap=bootstrap)
