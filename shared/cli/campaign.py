"""``asiarch campaign start|stop|status``: campaigns are events; their progress is read from memory's API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from shared import bus
from shared.cli.stack import Endpoints, connect_nats
from shared.errors import AsiarchError
from shared.events import Budget, CampaignStarted, CampaignStopped, Event, campaign_stopped_id, new_event_id, utc_now
from shared.noise import Measured


class CampaignError(AsiarchError):
    code = "campaign"


async def publish_events(nats_url: str, *events: Event) -> list[int]:
    """Publish in order; each event's stream sequence (a duplicate's is the one first stored)."""
    nc = await connect_nats(nats_url)
    try:
        js = nc.jetstream()
        await bus.ensure_stream(js, duplicate_window_s=6 * 3600)
        return [(await bus.publish(js, event, "cli")).seq for event in events]
    finally:
        await nc.close()


def start_event(
    profile: str, budget: int, cpu_hours: float, gpu_hours: float, model: str, seed: int, research: bool = True
) -> CampaignStarted:
    return CampaignStarted(
        event_id=new_event_id(), occurred_at=utc_now(), producer="cli", campaign_id=f"c-{new_event_id()[:10]}",
        profile=profile, budget=Budget(experiments=budget, cpu_hours=cpu_hours, gpu_hours=gpu_hours),
        llm_model=model, seed=seed, research=research,
    )


def stop_event(campaign_id: str, reason: str) -> CampaignStopped:
    return CampaignStopped(event_id=campaign_stopped_id(campaign_id), occurred_at=utc_now(), producer="cli",
                           campaign_id=campaign_id, reason=reason)


def start(stack: Endpoints, event: CampaignStarted) -> int:
    """Publish the campaign's start; its stream sequence."""
    return asyncio.run(publish_events(stack.nats_url, event))[0]


def stop(stack: Endpoints, campaign_id: str, reason: str = "stopped by user") -> None:
    asyncio.run(publish_events(stack.nats_url, stop_event(campaign_id, reason)))


@dataclass
class CampaignReport:
    stats: dict[str, Any]
    leaderboard: list[dict[str, Any]]

    @property
    def running(self) -> bool:
        return any(c.get("status") == "running" for c in self.stats.get("campaigns", []))


def report(stack: Endpoints, campaign_id: str | None, top: int = 10) -> CampaignReport:
    params = {"campaign_id": campaign_id} if campaign_id else {}
    try:
        with httpx.Client(base_url=stack.memory_url, timeout=10) as http:
            stats = http.get("/stats", params=params)
            stats.raise_for_status()
            board = http.get("/experiments", params={**params, "sort": "fitness", "limit": top})
            board.raise_for_status()
    except httpx.HTTPError as exc:
        raise CampaignError(f"memory did not answer: {exc}") from exc
    return CampaignReport(stats=stats.json(), leaderboard=board.json()["items"])


def latest_campaign(stack: Endpoints) -> str | None:
    campaigns = report(stack, None).stats.get("campaigns", [])
    running = [c for c in campaigns if c.get("status") == "running"]
    chosen = running or campaigns
    return str(sorted(chosen, key=lambda c: str(c.get("started_at", "")))[-1]["_id"]) if chosen else None


def loss_over_seeds(row: dict[str, Any]) -> str:
    """An experiment's val loss as the leaderboard shows it: mean ± sd over its seeds, and whether a second seed
    is on its way."""
    loss = row.get("val_loss")
    if loss is None:
        return "-"
    measured = Measured(loss, row.get("val_loss_sd"), max(1, int(row.get("seeds") or 1)))
    return measured.text() + (" +1 training" if row.get("awaiting_replicate") else "")
