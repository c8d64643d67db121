"""Researcher's handlers: follow the campaigns it proposes for and the experiments it has in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymongo.database import Database

from shared.bus import Delivery
from shared.events import CampaignStarted, CampaignStopped, Event

STATE = "researcher_campaigns"


class CampaignBook:
    """The campaigns the researcher works for; each write carries the stream sequence that caused it."""

    def __init__(self, db: Database) -> None:
        self.collection = db[STATE]

    def started(self, event: CampaignStarted, seq: int) -> None:
        doc = {
            "profile": event.profile, "budget_experiments": event.budget.experiments,
            "llm_model": event.llm_model, "seed": event.seed, "status": "running", "seq": seq,
        }
        self.collection.update_one({"_id": event.campaign_id}, {"$set": doc}, upsert=True)

    def stopped(self, event: CampaignStopped, seq: int) -> None:
        self.collection.update_one(
            {"_id": event.campaign_id}, {"$set": {"status": "stopped", "reason": event.reason, "seq": seq}},
            upsert=True,
        )

    def running(self) -> list[dict[str, object]]:
        return list(self.collection.find({"status": "running"}))


async def on_campaign_started(book: CampaignBook, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, CampaignStarted)
    await asyncio.to_thread(book.started, event, delivery.stream_seq)
    return ()


async def on_campaign_stopped(book: CampaignBook, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, CampaignStopped)
    await asyncio.to_thread(book.stopped, event, delivery.stream_seq)
    return ()
