"""Debugger's settings and wiring."""

from __future__ import annotations

from functools import partial

from pydantic import Field

from services.debugger.handlers import on_train_failed
from services.debugger.patcher import Budget, LlmPatcher
from shared import metrics
from shared.agent import AgentSettings, agent_clients, follow_campaign_model
from shared.events import CampaignStarted, TrainFailed
from shared.service import Runtime, ServiceSpec, Wiring
from shared.trajectory import recorded


class DebuggerSettings(AgentSettings):
    service_name: str = "debugger"
    # Training attempts per experiment, the first one included.
    max_attempts: int = Field(default=3, ge=1)
    # The profile a patch is tried at when its failure names none (the engineer's default).
    trial_profile: str = "smoke"
    # What one attempt may spend on the LLM after the mechanical repairs: code replies, completion tokens.
    llm_replies: int = Field(default=3, ge=0)
    llm_completion_tokens: int = Field(default=6000, ge=0)


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, DebuggerSettings)
    llm, memory = await agent_clients(runtime)
    metrics.init_debugger(settings.service_name, settings.max_attempts)
    patcher = LlmPatcher(llm, memory, default_profile=settings.trial_profile,
                         budget=Budget(settings.llm_replies, settings.llm_completion_tokens))
    return Wiring(handlers={TrainFailed: recorded(settings.service_name,
                                                  partial(on_train_failed, patcher, settings.max_attempts)),
                            CampaignStarted: partial(follow_campaign_model, llm)})


SPEC = ServiceSpec(name="debugger", settings_type=DebuggerSettings, bootstrap=bootstrap)
