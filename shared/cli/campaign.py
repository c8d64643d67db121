"""``asiarch campaign start|stop|status``: campaigns are events; their progress is read from memory's API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from shared import bus
from shared.cli.stack import Endpoints, connect_nats
from shared.errors import AsiarchError
from shared.event_text import EventLine
from shared.events import (
    FREE_MOVE,
    Budget,
    CampaignStarted,
    CampaignStopped,
    Event,
    campaign_stopped_id,
    new_event_id,
    utc_now,
)
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
    profile: str, budget: int, cpu_hours: float, gpu_hours: float, model: str, seed: int, research: bool = True,
    control: bool = False,
) -> CampaignStarted:
    return CampaignStarted(
        event_id=new_event_id(), occurred_at=utc_now(), producer="cli", campaign_id=f"c-{new_event_id()[:10]}",
        profile=profile, budget=Budget(experiments=budget, cpu_hours=cpu_hours, gpu_hours=gpu_hours),
        llm_model=model, seed=seed, research=research, control=control,
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


def memory_response(stack: Endpoints, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
    """Memory's answer to a GET, whatever its status; an error naming memory when it does not answer at all.
    A parameter given as None is left out (httpx would send it empty)."""
    given = {key: value for key, value in (params or {}).items() if value is not None}
    try:
        with httpx.Client(base_url=stack.memory_url, timeout=30) as http:
            return http.get(path, params=given)
    except httpx.HTTPError as exc:
        raise CampaignError(f"memory did not answer {path} at {stack.memory_url}: {exc}") from exc


def memory_json(stack: Endpoints, path: str, params: dict[str, Any] | None = None) -> Any:
    response = memory_response(stack, path, params)
    if response.status_code != 200:
        raise CampaignError(f"memory answered {path} with {response.status_code}: {response.text[:300]}")
    return response.json()


def model_yield(stack: Endpoints, model: str) -> dict[str, dict[str, int]] | None:
    """What the proposals a model wrote yielded, by mode: ``moves`` (the library's) and ``free`` (its own change),
    each drawn, trained and beat its parent beyond noise; None when memory does not answer."""
    try:
        records = memory_json(stack, "/moves", {"model": model})["records"]
    except CampaignError:
        return None
    modes = {mode: {"drawn": 0, "trained": 0, "beat_parent": 0} for mode in ("moves", "free")}
    for move, record in records.items():
        mode = modes["free" if move == FREE_MOVE else "moves"]
        for key in mode:
            mode[key] += int(record[key])
    return modes


def campaign_experiments(stack: Endpoints, campaign_id: str) -> list[dict[str, Any]]:
    """Every experiment of the campaign (pages of memory's listing), best fitness first."""
    items: list[dict[str, Any]] = []
    while True:
        page = memory_json(stack, "/experiments", {"campaign_id": campaign_id, "sort": "fitness", "limit": 200,
                                                   "offset": len(items)})
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


FINAL = ("rejected", "gave_up")


def unsettled(stack: Endpoints, campaign_id: str) -> list[str]:
    """The campaign's experiments that more is coming for: still training or being debugged, trained but not yet
    ranked (a campaign starts only once its profile's fitness reference is measured, so each trained run gets a
    fitness), or waiting for a second seed."""
    return [e["name"] or e["id"] for e in campaign_experiments(stack, campaign_id)
            if e["status"] not in FINAL and (e["status"] != "trained" or e.get("fitness") is None
                                              or e.get("awaiting_replicate"))]


class CampaignOver:
    """When following a campaign ends: once it is stopped and every experiment of it is settled (``unsettled``),
    or ``settle_timeout_s`` after the stop, for a run that is never scored (its judge's messages dead-lettered)."""

    def __init__(self, stack: Endpoints, campaign_id: str, settle_timeout_s: float = 1800.0,
                 check_every_s: float = 3.0) -> None:
        self.stack, self.campaign_id = stack, campaign_id
        self.settle_timeout_s, self.check_every_s = settle_timeout_s, check_every_s
        self.stopped_at: float | None = None
        self.checked_at = 0.0
        self.pending: list[str] = []

    def keep(self, line: EventLine) -> bool:
        return line.campaign_id == self.campaign_id

    def __call__(self, line: EventLine | None) -> bool:
        if line is not None and line.name == CampaignStopped.event_name():
            self.stopped_at = time.monotonic()
        return self.settled()

    def settled(self) -> bool:
        now = time.monotonic()
        if self.stopped_at is None or now - self.checked_at < self.check_every_s:
            return False
        self.checked_at = now
        self.pending = unsettled(self.stack, self.campaign_id)
        return not self.pending or now - self.stopped_at > self.settle_timeout_s


def report(stack: Endpoints, campaign_id: str | None, top: int = 10) -> CampaignReport:
    params = {"campaign_id": campaign_id} if campaign_id else {}
    stats = memory_json(stack, "/stats", params)
    board = memory_json(stack, "/experiments", {**params, "sort": "fitness", "limit": top})
    return CampaignReport(stats=stats, leaderboard=board["items"])


def all_campaigns(stack: Endpoints) -> list[dict[str, Any]]:
    """Every campaign memory knows, oldest first."""
    return sorted(memory_json(stack, "/stats")["campaigns"], key=lambda c: str(c.get("started_at", "")))


def running_of(campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in campaigns if c.get("status") == "running"]


def latest_campaign(stack: Endpoints) -> str | None:
    campaigns = all_campaigns(stack)
    chosen = running_of(campaigns) or campaigns
    return str(chosen[-1]["_id"]) if chosen else None


def loss_over_seeds(row: dict[str, Any]) -> str:
    """An experiment's val loss as the leaderboard shows it: mean ± sd over its seeds, and whether a second seed
    is on its way."""
    loss = row.get("val_loss")
    if loss is None:
        return "-"
    measured = Measured(loss, row.get("val_loss_sd"), max(1, int(row.get("seeds") or 1)))
    return measured.text() + (" +1 training" if row.get("awaiting_replicate") else "")
