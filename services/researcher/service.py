"""Researcher's settings and wiring."""

from __future__ import annotations

from functools import partial

from services.researcher.handlers import CampaignBook, on_campaign_started, on_campaign_stopped
from shared.events import CampaignStarted, CampaignStopped
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


class ResearcherSettings(ServiceSettings):
    service_name: str = "researcher"


async def bootstrap(runtime: Runtime) -> Wiring:
    book = CampaignBook(runtime.db)
    return Wiring(handlers={
        CampaignStarted: partial(on_campaign_started, book),
        CampaignStopped: partial(on_campaign_stopped, book),
    })


SPEC = ServiceSpec(name="researcher", settings_type=ResearcherSettings, bootstrap=bootstrap)
