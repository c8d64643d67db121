"""Researcher's settings and wiring."""

from __future__ import annotations

from functools import partial

from pydantic import Field

from services.engineer.baselines import BASELINES
from services.researcher.handlers import CampaignBook, on_event
from services.researcher.loop import ResearchLoop
from services.researcher.proposer import Proposer
from shared.events import (
    CampaignStarted,
    CampaignStopped,
    DebugGaveUp,
    ProposalCreated,
    ProposalRejected,
    TrainFailed,
    TrainSucceeded,
)
from shared.llm import LlmClient, LlmSettings, build_backend
from shared.memory_client import MemoryClient
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import DEFAULT_HTTP_PORTS, ServiceSettings

FOLLOWED = (CampaignStarted, CampaignStopped, ProposalCreated, ProposalRejected, TrainSucceeded, TrainFailed,
            DebugGaveUp)


class ResearcherSettings(ServiceSettings, LlmSettings):
    service_name: str = "researcher"
    memory_url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORTS['memory']}"
    max_in_flight: int = Field(default=1, ge=1)
    revisions: int = Field(default=2, ge=0)
    example_baseline: str = "linear_attention"


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, ResearcherSettings)
    book = CampaignBook(runtime.db)
    memory = MemoryClient(settings.memory_url)
    runtime.exit_stack.push_async_callback(memory.aclose)
    llm = LlmClient(build_backend(settings), "researcher", settings.llm_max_attempts)
    proposer = Proposer(llm, memory, BASELINES, settings.example_baseline, settings.revisions)
    loop = ResearchLoop(book, proposer, runtime.js, max_in_flight=settings.max_in_flight)
    handler = partial(on_event, book)
    return Wiring(handlers={event_type: handler for event_type in FOLLOWED}, tasks=[loop.run])


SPEC = ServiceSpec(name="researcher", settings_type=ResearcherSettings, bootstrap=bootstrap)
