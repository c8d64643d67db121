"""The researcher's proposing loop: draft proposals for the running campaigns, several at once.

Drafting is mostly waiting on the LLM server, which decodes concurrent requests in one batch, at a higher total
rate than one at a time; so up to ``drafts_at_once`` proposals are drafted together, across campaigns and within
one.
Backpressure comes from the book: a campaign gets a new draft only while its experiments in flight (created, not
yet trained or given up) and its drafts together stay under ``max_in_flight``, and while its budget has room for
the drafts already under way. When the budget is spent and nothing is in flight or drafted, the researcher stops
the campaign. A campaign started without research (``campaign start --no-research``) gets no proposal from here:
the mixers submitted to it fill its budget, and it is stopped the same way.
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
                 drafts_at_once: int = 1, poll_s: float = 2.0, retry_s: float = 30.0) -> None:
        self.book = book
        self.proposer = proposer
        self.js = js
        self.max_in_flight = max_in_flight
        self.drafts_at_once = drafts_at_once
        self.poll_s = poll_s
        # After a failed attempt (memory or the LLM down), wait this long: a broken dependency is not hammered.
        self.retry_s = retry_s
        # The proposal indices (which seed a proposal's draws) each campaign is drafting now, the next one to give
        # out, and those of drafts that failed before publishing, given out again first. Drafts finish in any order,
        # so the next index only grows: two drafts never share one.
        self.drafting: dict[str, set[int]] = {}
        self.next_index: dict[str, int] = {}
        self.freed: dict[str, set[int]] = {}
        # Drafts that ended (campaign, index, published), released only by ``settle``, just before the book is read:
        # released any later, a draft would have left ``drafting`` while the view read before still missed its
        # proposal, and the budget would look one larger than it is.
        self.ended: list[tuple[str, int, bool]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                self.settle()
                running = await asyncio.to_thread(self.book.campaigns, "running")
                metrics.CAMPAIGN_RUNNING.labels(PRODUCER).set(len(running))
                for campaign in self.fairly(running):
                    await self.step(campaign)
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self.tasks:
                task.cancel()

    def fairly(self, running: list[CampaignView]) -> list[CampaignView]:
        """The campaigns with the fewest proposals (made or drafting) first: the draft that frees up goes to the
        one behind, so campaigns side by side (an arm and its control) advance at the same pace."""
        return sorted(running, key=lambda c: c.proposed + len(self.drafting.get(c.campaign_id, ())))

    def settle(self) -> None:
        """Release the drafts that ended; a draft that failed unexpectedly fails the loop, as it did when drafts
        ran inline (the service ends and its supervisor restarts it)."""
        for campaign_id, index, published in self.ended:
            self.drafting[campaign_id].discard(index)
            if not published:
                self.freed[campaign_id].add(index)
        self.ended.clear()
        for task in [task for task in self.tasks if task.done()]:
            self.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def step(self, campaign: CampaignView) -> None:
        drafting = self.drafting.setdefault(campaign.campaign_id, set())
        if not campaign.budget_left:
            if campaign.in_flight == 0 and not drafting:
                await self.publish(CampaignStopped(
                    event_id=campaign_stopped_id(campaign.campaign_id), occurred_at=utc_now(), producer=PRODUCER,
                    campaign_id=campaign.campaign_id, reason="budget reached"))
            return
        if not campaign.research:
            return
        for _ in range(self.room(campaign, drafting)):
            index = self.reserve(campaign, drafting)
            task = asyncio.create_task(self.draft(campaign, index), name=f"draft {campaign.campaign_id}/{index}")
            self.tasks.add(task)

    def reserve(self, campaign: CampaignView, drafting: set[int]) -> int:
        """A proposal index no other draft of the campaign has; after a restart, the count of its proposals (so
        a restarted researcher does not replay the draws of the proposals it made)."""
        freed = self.freed.setdefault(campaign.campaign_id, set())
        if freed:
            index = min(freed)
            freed.discard(index)
        else:
            index = max(self.next_index.get(campaign.campaign_id, 0), campaign.proposed + len(drafting))
            self.next_index[campaign.campaign_id] = index + 1
        drafting.add(index)
        return index

    def room(self, campaign: CampaignView, drafting: set[int]) -> int:
        """How many more drafts this campaign may start now."""
        under_way = sum(len(indices) for indices in self.drafting.values())
        return max(0, min(self.drafts_at_once - under_way,
                          self.max_in_flight - campaign.in_flight - len(drafting),
                          campaign.budget_experiments - campaign.proposed - len(drafting)))

    async def draft(self, campaign: CampaignView, index: int) -> None:
        """Propose and publish; the draft counts against the campaign until its proposal is counted in the book
        (and ``settle`` has run since)."""
        published = False
        try:
            with recording() as exchanges:
                events = await self.attempt(lambda: self.proposer.propose(
                    Campaign(campaign.campaign_id, campaign.seed, campaign.llm_model, campaign.profile,
                             campaign.control), index))
            if events is None:
                await asyncio.sleep(self.retry_s)
                return
            for event in events:  # a move learned goes out before the proposal that names it
                await self.publish(event)
            published = True
            for event in trajectory(PRODUCER, events, exchanges):  # the conversation after them
                await self.publish(event)
            await self.wait_until_counted(campaign.campaign_id, events[-1].experiment_id)
        finally:
            self.ended.append((campaign.campaign_id, index, published))

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

    async def wait_until_counted(self, campaign_id: str, experiment_id: str, timeout_s: float = 30.0) -> None:
        """Our own event comes back through the consumer; wait for it so the next step sees it in flight."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(self.book.counts, campaign_id, experiment_id):
                return
            await asyncio.sleep(0.2)
        log.warning("campaign %s: own proposal %s not counted after %.0f s", campaign_id, experiment_id, timeout_s)
