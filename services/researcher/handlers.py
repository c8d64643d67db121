"""Researcher's handlers: follow each campaign's budget and the experiments it has in flight.

Every write is idempotent by construction: one document per (campaign, experiment) with flags set by ``$set``,
and one spend document per event that reported training time, so an event applied twice changes nothing. (Array
operators such as ``$addToSet`` are avoided: the embedded store does not implement them faithfully.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from shared import metrics
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
from shared.llm import LlmClient

STATE = "researcher_campaigns"
MEMBERS = "researcher_experiments"
SPEND = "researcher_spend"


@dataclass(frozen=True)
class CampaignView:
    campaign_id: str
    status: str
    profile: str
    seed: int
    llm_model: str
    research: bool  # False: the researcher proposes nothing; submitted mixers alone fill the budget
    control: bool  # the control arm: uniform built-in moves, no analyses, no cognition, nothing learned
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


@dataclass(frozen=True)
class Tally:
    proposed: int
    in_flight: int
    cpu_seconds: float
    gpu_seconds: float


def view_of(doc: dict[str, Any], tally: Tally) -> CampaignView:
    return CampaignView(
        campaign_id=doc["_id"], status=doc.get("status", "unknown"), profile=doc.get("profile", ""),
        seed=int(doc.get("seed", 0)), llm_model=doc.get("llm_model", ""),
        research=bool(doc.get("research", True)),  # bool(): the embedded store hands booleans back as 0/1
        control=bool(doc.get("control", False)),
        budget_experiments=int(doc.get("budget_experiments", 0)),
        budget_cpu_hours=float(doc.get("budget_cpu_hours", 0.0)),
        budget_gpu_hours=float(doc.get("budget_gpu_hours", 0.0)),
        proposed=tally.proposed, in_flight=tally.in_flight,
        cpu_hours=tally.cpu_seconds / 3600, gpu_hours=tally.gpu_seconds / 3600,
    )


class CampaignBook:
    def __init__(self, db: Database) -> None:
        self.campaigns_collection = db[STATE]
        self.members = db[MEMBERS]
        self.spend = db[SPEND]

    def apply(self, event: Event) -> None:
        if not event.campaign_id:
            return
        if isinstance(event, (CampaignStarted, CampaignStopped)):
            self.campaigns_collection.update_one({"_id": event.campaign_id}, {"$set": campaign_fields(event)},
                                                 upsert=True)
            return
        flags = member_flags(event)
        if flags:
            key = f"{event.campaign_id}/{event.experiment_id}"
            self.members.update_one({"_id": key}, {"$set": {"campaign_id": event.campaign_id, **flags}},
                                    upsert=True)
        seconds = spend_of(event)
        if seconds is not None:
            cpu, gpu = seconds
            self.spend.update_one({"_id": event.event_id}, {"$set": {
                "campaign_id": event.campaign_id, "cpu_seconds": cpu, "gpu_seconds": gpu}}, upsert=True)

    def tally(self, campaign_id: str) -> Tally:
        members = list(self.members.find({"campaign_id": campaign_id}))
        # bool(): the embedded store hands booleans back as 0/1.
        created = [m for m in members if bool(m.get("created"))]
        in_flight = [m for m in created if not bool(m.get("done"))]
        proposed = [m for m in members if is_proposed(m)]
        spend = list(self.spend.find({"campaign_id": campaign_id}))
        return Tally(proposed=len(proposed), in_flight=len(in_flight),
                     cpu_seconds=sum(float(s.get("cpu_seconds") or 0) for s in spend),
                     gpu_seconds=sum(float(s.get("gpu_seconds") or 0) for s in spend))

    def counts(self, campaign_id: str, experiment_id: str) -> bool:
        """Whether the campaign's proposals count this experiment (created or rejected)."""
        return is_proposed(self.members.find_one({"_id": f"{campaign_id}/{experiment_id}"}) or {})

    def campaigns(self, status: str | None = None) -> list[CampaignView]:
        query = {"status": status} if status else {}
        return [view_of(doc, self.tally(doc["_id"])) for doc in self.campaigns_collection.find(query)]

    def campaign(self, campaign_id: str) -> CampaignView | None:
        doc = self.campaigns_collection.find_one({"_id": campaign_id})
        return view_of(doc, self.tally(campaign_id)) if doc else None


def is_proposed(member: dict[str, Any]) -> bool:
    """Whether an experiment counts as a proposal of its campaign: created, or rejected before or after."""
    return bool(member.get("created")) or bool(member.get("rejected"))  # bool(): the embedded store's 0/1


def campaign_fields(event: CampaignStarted | CampaignStopped) -> dict[str, Any]:
    if isinstance(event, CampaignStopped):
        return {"status": "stopped", "reason": event.reason}
    return {
        "status": "running", "profile": event.profile, "seed": event.seed, "llm_model": event.llm_model,
        "research": event.research, "control": event.control,
        "budget_experiments": event.budget.experiments, "budget_cpu_hours": event.budget.cpu_hours,
        "budget_gpu_hours": event.budget.gpu_hours,
    }


def member_flags(event: Event) -> dict[str, bool]:
    """The flags an event sets on its experiment: created, rejected, done (nothing more will happen to it)."""
    if isinstance(event, ProposalCreated):
        return {"created": True}
    if isinstance(event, ProposalRejected):
        # Rejected by the researcher before creation, or by the engineer after: either way it is over.
        return {"rejected": True, "done": True}
    if isinstance(event, (TrainSucceeded, DebugGaveUp)):
        return {"done": True}
    return {}


def spend_of(event: Event) -> tuple[float, float] | None:
    """(CPU-core seconds, GPU seconds) a training report spent."""
    if isinstance(event, TrainSucceeded):
        return event.cpu_core_seconds, event.gpu_seconds
    if isinstance(event, TrainFailed):
        on_gpu = event.device.startswith("cuda")
        return (0.0, event.device_seconds) if on_gpu else (event.device_seconds, 0.0)
    return None


async def on_campaign_started(book: CampaignBook, llm: LlmClient, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, CampaignStarted)
    llm.use_model(event.llm_model)  # the agents speak with the model the campaign named
    return await on_event(book, event, delivery)


FINISHED_AS = {TrainSucceeded: "trained", DebugGaveUp: "gave_up", ProposalRejected: "rejected"}


async def on_event(book: CampaignBook, event: Event, delivery: Delivery) -> Sequence[Event]:
    await asyncio.to_thread(book.apply, event)
    outcome = FINISHED_AS.get(type(event))
    if outcome is not None:
        metrics.EXPERIMENTS_FINISHED.labels("researcher", outcome).inc()
    return ()
