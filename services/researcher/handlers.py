"""Researcher's handlers: follow each campaign's budget and the experiments it has in flight.

Every write is idempotent by construction: sets of experiment ids (``$addToSet``) and spend keyed by the event id
that reported it, so an event applied twice changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from shared.bus import Delivery
from shared.events import (
    CampaignStarted,
    CampaignStopped,
    DebugGaveUp,
    Event,
    ProposalCreated,
    ProposalRejected,
    TrainFailed,
    TrainSucceeded,
)

STATE = "researcher_campaigns"


@dataclass(frozen=True)
class CampaignView:
    campaign_id: str
    status: str
    profile: str
    seed: int
    llm_model: str
    budget_experiments: int
    budget_cpu_hours: float
    budget_gpu_hours: float
    proposed: int
    in_flight: int
    cpu_hours: float
    gpu_hours: float

    @property
    def budget_left(self) -> bool:
        over_hours = (self.budget_cpu_hours > 0 and self.cpu_hours >= self.budget_cpu_hours) or (
            self.budget_gpu_hours > 0 and self.gpu_hours >= self.budget_gpu_hours)
        return self.proposed < self.budget_experiments and not over_hours


def view_of(doc: dict[str, Any]) -> CampaignView:
    created = set(doc.get("created", []))
    done = set(doc.get("done", []))
    return CampaignView(
        campaign_id=doc["_id"], status=doc.get("status", "unknown"), profile=doc.get("profile", ""),
        seed=int(doc.get("seed", 0)), llm_model=doc.get("llm_model", ""),
        budget_experiments=int(doc.get("budget_experiments", 0)),
        budget_cpu_hours=float(doc.get("budget_cpu_hours", 0.0)),
        budget_gpu_hours=float(doc.get("budget_gpu_hours", 0.0)),
        proposed=len(created | set(doc.get("rejected", []))), in_flight=len(created - done),
        cpu_hours=sum(doc.get("cpu_seconds", {}).values()) / 3600,
        gpu_hours=sum(doc.get("gpu_seconds", {}).values()) / 3600,
    )


class CampaignBook:
    def __init__(self, db: Database) -> None:
        self.collection = db[STATE]

    def update(self, campaign_id: str, change: dict[str, Any]) -> None:
        self.collection.update_one({"_id": campaign_id}, change, upsert=True)

    def apply(self, event: Event) -> None:
        change = change_for(event)
        if change is not None and event.campaign_id:
            self.update(event.campaign_id, change)

    def campaigns(self, status: str | None = None) -> list[CampaignView]:
        query = {"status": status} if status else {}
        return [view_of(doc) for doc in self.collection.find(query)]

    def campaign(self, campaign_id: str) -> CampaignView | None:
        doc = self.collection.find_one({"_id": campaign_id})
        return view_of(doc) if doc else None


def change_for(event: Event) -> dict[str, Any] | None:
    """The idempotent store change an event makes to its campaign's book."""
    if isinstance(event, CampaignStarted):
        return {"$set": {
            "status": "running", "profile": event.profile, "seed": event.seed, "llm_model": event.llm_model,
            "budget_experiments": event.budget.experiments, "budget_cpu_hours": event.budget.cpu_hours,
            "budget_gpu_hours": event.budget.gpu_hours, "started_at": event.occurred_at,
        }}
    if isinstance(event, CampaignStopped):
        return {"$set": {"status": "stopped", "reason": event.reason, "stopped_at": event.occurred_at}}
    if isinstance(event, ProposalCreated):
        return {"$addToSet": {"created": event.experiment_id}}
    if isinstance(event, ProposalRejected):
        # Rejected by the researcher before creation, or by the engineer after: either way it is over.
        return {"$addToSet": {"rejected": event.experiment_id, "done": event.experiment_id}}
    if isinstance(event, (TrainSucceeded, DebugGaveUp)):
        change: dict[str, Any] = {"$addToSet": {"done": event.experiment_id}}
        if isinstance(event, TrainSucceeded):
            change["$set"] = spend(event.event_id, event.cpu_core_seconds, event.gpu_seconds)
        return change
    if isinstance(event, TrainFailed):
        on_gpu = event.device.startswith("cuda")
        cpu, gpu = (0.0, event.device_seconds) if on_gpu else (event.device_seconds, 0.0)
        return {"$set": spend(event.event_id, cpu, gpu)}
    return None


def spend(event_id: str, cpu_seconds: float, gpu_seconds: float) -> dict[str, float]:
    return {f"cpu_seconds.{event_id}": cpu_seconds, f"gpu_seconds.{event_id}": gpu_seconds}


async def on_event(book: CampaignBook, event: Event, delivery: Delivery) -> Sequence[Event]:
    await asyncio.to_thread(book.apply, event)
    return ()
