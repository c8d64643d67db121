"""Researcher's settings and wiring."""

from __future__ import annotations

import asyncio
from functools import partial

from pydantic import Field

from services.researcher.handlers import CampaignBook, on_campaign_started, on_event
from services.researcher.loop import ResearchLoop
from services.researcher.moves import DEFAULT_EXPLORATION, MOVES
from services.researcher.proposer import Proposer
from shared import metrics
from shared.agent import AgentSettings, agent_clients
from shared.events import (
    REJECTION_REASONS,
    CampaignStarted,
    CampaignStopped,
    DebugGaveUp,
    ProposalCreated,
    ProposalRejected,
    TrainFailed,
    TrainSucceeded,
)
from shared.mixer.baselines import BASELINES
from shared.mixer.probe import probe_draft
from shared.service import Runtime, ServiceSpec, Wiring

FOLLOWED = (CampaignStarted, CampaignStopped, ProposalCreated, ProposalRejected, TrainSucceeded, TrainFailed,
            DebugGaveUp)


class ResearcherSettings(AgentSettings):
    service_name: str = "researcher"
    # Experiments a campaign has in flight or being drafted: the researcher's backpressure.
    max_in_flight: int = Field(default=3, ge=1)
    # Proposals drafted at once across campaigns: the LLM server decodes them in one batch.
    drafts_at_once: int = Field(default=2, ge=1)
    revisions: int = Field(default=2, ge=0)
    example_baseline: str = "linear_attention"
    # Hand the LLM one concrete design move to make (small models copy their parent when left to choose).
    guided_moves: bool = True
    # Run each draft sandboxed (the engineer's checks, then its outputs) and send one that fails a check or
    # computes what its parent does back to the LLM.
    behaviour_probe: bool = True
    # The probe compares outputs at this profile's width; the smallest is quickest and tells copies apart as well.
    probe_profile: str = "smoke"
    # The share of proposals that make a new move (from a cognition entry or an analysis) rather than draw one
    # from the library; a move is added once a proposal made with it passes the checks and the probe.
    invent_share: float = Field(default=0.3, ge=0.0, le=1.0)
    # The LLM's own change is one more arm of the bandit, drawn by its measured yield for the campaign's model.
    free_arm: bool = True
    # Recombination is one more arm: a component of a reference mixer ported into the parent.
    crossover_arm: bool = True
    # Island sampling: proposals join islands in turn and draw parents from their own island's ranking (0: one
    # population); every migration_every-th draws from the whole ranking instead.
    islands: int = Field(default=0, ge=0, le=64)
    migration_every: int = Field(default=5, ge=0)
    # UCB's exploration constant over the moves (rewards are in [0, 1]).
    move_exploration: float = Field(default=DEFAULT_EXPLORATION, ge=0.0)


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, ResearcherSettings)
    metrics.init_researcher(settings.service_name, REJECTION_REASONS)
    book = CampaignBook(runtime.db)
    llm, memory = await agent_clients(runtime)
    probe = partial(asyncio.to_thread, probe_draft, profile=settings.probe_profile)
    proposer = Proposer(llm, memory, BASELINES, settings.example_baseline, settings.revisions,
                        moves=MOVES if settings.guided_moves else (),
                        probe=probe if settings.behaviour_probe else None, invent_share=settings.invent_share,
                        exploration=settings.move_exploration, free_arm=settings.free_arm,
                        islands=settings.islands, migration_every=settings.migration_every,
                        crossover_arm=settings.crossover_arm)
    loop = ResearchLoop(book, proposer, runtime.js, max_in_flight=settings.max_in_flight,
                        drafts_at_once=settings.drafts_at_once)
    handler = partial(on_event, book)
    handlers = {event_type: handler for event_type in FOLLOWED}
    handlers[CampaignStarted] = partial(on_campaign_started, book, llm)
    return Wiring(handlers=handlers, tasks=[loop.run])


SPEC = ServiceSpec(name="researcher", settings_type=ResearcherSettings, bootstrap=bootstrap)
