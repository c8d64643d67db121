"""What every LLM agent service (researcher, debugger, analyst, judge) has in common: settings and clients."""

from __future__ import annotations

from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import metrics
from shared.bus import Delivery
from shared.events import STREAM_NAME, CampaignStarted, Event, decode
from shared.llm import LlmBackend, LlmClient, LlmSettings, build_backend
from shared.memory_client import MemoryClient
from shared.service import Runtime
from shared.settings import ServiceSettings


class AgentSettings(ServiceSettings, LlmSettings):
    """An LLM agent's settings: a service's (memory's address among them) and the LLM client's."""


async def agent_clients(runtime: Runtime) -> tuple[LlmClient, MemoryClient]:
    """The agent's LLM client, on the model of the latest campaign, and its memory client (closed on shutdown)."""
    settings = runtime.settings
    assert isinstance(settings, AgentSettings)
    memory = MemoryClient(settings.memory_url)
    runtime.exit_stack.push_async_callback(memory.aclose)
    def backend_for(model: str) -> LlmBackend:
        return build_backend(settings.model_copy(update={"llm_model": model}))

    llm = LlmClient(build_backend(settings), settings.service_name, settings.llm_max_attempts, backend_for)
    metrics.init_llm(settings.service_name)
    await follow_latest_campaign(runtime.js, llm)
    return llm, memory


async def follow_latest_campaign(js: JetStreamContext, llm: LlmClient) -> None:
    """Speak with the model the latest campaign named. Its ``campaign.started`` was consumed before a restart, so
    it is read back from the stream; without this a restarted agent would fall back to the default model."""
    try:
        raw = await js.get_last_msg(STREAM_NAME, CampaignStarted.subject())
    except NotFoundError:
        return
    started = decode(raw.data)
    if isinstance(started, CampaignStarted):
        llm.use_model(started.llm_model)


async def follow_campaign_model(llm: LlmClient, event: Event, delivery: Delivery) -> Sequence[Event]:
    """Every agent speaks with the model the latest campaign named."""
    assert isinstance(event, CampaignStarted)
    llm.use_model(event.llm_model)
    return ()
