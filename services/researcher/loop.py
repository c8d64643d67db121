"""The researcher's proposing loop: keep a bounded number of experiments in flight per running campaign.

Backpressure comes from the book: a campaign gets a new proposal only while fewer than ``max_in_flight`` of its
experiments are unfinished and its budget has room. When the budget is spent and nothing is in flight, the
researcher stops the campaign. A campaign started without research (``campaign start --no-research``) gets no
proposal from here: the mixers submitted to it fill its budget, and it is stopped the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.js import JetStreamContext

from services.researcher.handlers import CampaignBook, CampaignView
from services.researcher.proposer import Campaign, Proposer
from shared import bus, metrics
from shared.errors import TransientError
from shared.events import (
    CampaignStopped,
    Event,
    MoveLearned,
    ProposalCreated,
    ProposalRejected,
    campaign_stopped_id,
    utc_now,
)
from shared.llm import LlmError, recording
from shared.trajectory import trajectory

log = logging.getLogger(__name__)
PRODUCER = "researcher"


class ResearchLoop:
    def __init__(self, book: CampaignBook, proposer: Proposer, js: JetStreamContext, *, max_in_flight: int,
                 poll_s: float = 2.0, retry_s: float = 30.0) -> None:
        self.book = book
        self.proposer = proposer
        self.js = js
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        # After a failed attempt (memory or the LLM down), wait this long: a broken dependency is not hammered.
        self.retry_s = retry_s

    async def run(self) -> None:
        while True:
            running = await asyncio.to_thread(self.book.campaigns, "running")
            metrics.CAMPAIGN_RUNNING.labels(PRODUCER).set(len(running))
            for campaign in running:
                await self.step(campaign)
            await asyncio.sleep(self.poll_s)

    async def step(self, campaign: CampaignView) -> None:
        if not campaign.budget_left:
            if campaign.in_flight == 0:
                await self.publish(CampaignStopped(
                    event_id=campaign_stopped_id(campaign.campaign_id), occurred_at=utc_now(), producer=PRODUCER,
                    campaign_id=campaign.campaign_id, reason="budget reached"))
            return
        if not campaign.research or campaign.in_flight >= self.max_in_flight:
            return
        with recording() as exchanges:
            events = await self.attempt(lambda: self.proposer.propose(
                Campaign(campaign.campaign_id, campaign.seed, campaign.llm_model, campaign.profile, campaign.control),
                campaign.proposed))
        if events is None:
            await asyncio.sleep(self.retry_s)
            return
        # A move learned goes out before the proposal that names it; the conversation after it.
        for event in [*events, *trajectory(PRODUCER, events, exchanges)]:
            await self.publish(event)
        await self.wait_until_counted(campaign.campaign_id, campaign.proposed)

    async def attempt(self, make: Callable[[], Coroutine[Any, Any, list[Event]]]) -> list[Event] | None:
        try:
            return await make()
        except TransientError as exc:
            log.warning("memory is not answering, will retry: %s", exc)
        except LlmError as exc:
            log.error("the LLM failed to propose: %s", exc)
            metrics.LLM_FAILURES.labels(PRODUCER, "proposal").inc()
        return None

    async def publish(self, event: Event) -> None:
        await bus.publish(self.js, event, PRODUCER)
        if isinstance(event, ProposalRejected):
            metrics.PROPOSALS_REJECTED.labels(PRODUCER, event.reason).inc()
        elif isinstance(event, ProposalCreated):
            metrics.PROPOSALS.labels(PRODUCER).inc()
        elif isinstance(event, MoveLearned):
            metrics.MOVES_LEARNED.labels(PRODUCER).inc()

    async def wait_until_counted(self, campaign_id: str, before: int, timeout_s: float = 30.0) -> None:
        """Our own event comes back through the consumer; wait for it so the next step sees it in flight."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            view = await asyncio.to_thread(self.book.campaign, campaign_id)
            if view is not None and view.proposed > before:
                return
            await asyncio.sleep(0.2)
        log.warning("campaign %s: own proposal not counted after %.0f s", campaign_id, timeout_s)
