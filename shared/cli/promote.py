"""``asiarch promote``: ASI-Arch's second stage. The top of a campaign is trained again at a larger profile, beside
the same baselines measured there, and the two stages' rankings are compared (Spearman's rank correlation).

A promotion is a proposal at the new profile with the same code, derived from the experiment it promotes (its
parent): engineer, judge and analyst treat it like any run, and memory keeps the link. Its id is derived from the
promoted experiment and the profile, so promoting twice trains once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.cli.campaign import CampaignError, campaign_experiments, memory_json, memory_response, publish_events
from shared.cli.stack import Endpoints
from shared.events import PROMOTED, ProposalCreated, derived_event_id, utc_now
from shared.noise import spearman

PRODUCER = "promote"
FINISHED = ("trained", "failed", "gave_up", "rejected")


def promoted_id(experiment_id: str, profile: str) -> str:
    return f"{experiment_id}@{profile}"


def top_runs(experiments: list[dict[str, Any]], profile: str, top: int) -> list[dict[str, Any]]:
    """The best ``top`` runs trained at ``profile`` by fitness (promotions themselves are never promoted again)."""
    ranked = [e for e in experiments if e.get("profile") == profile and e.get("fitness") is not None
              and e["status"] == "trained"]
    return sorted(ranked, key=lambda e: -e["fitness"])[:top]


def promotion(stack: Endpoints, summary: dict[str, Any], profile: str) -> ProposalCreated:
    detail = memory_json(stack, f"/experiments/{summary['id']}")["experiment"]
    return ProposalCreated(
        event_id=derived_event_id(promoted_id(summary["id"], profile), PRODUCER, 0), occurred_at=utc_now(),
        producer=PRODUCER,
        campaign_id=summary["campaign_id"], experiment_id=promoted_id(summary["id"], profile),
        name=f"{summary.get('name') or summary['id']} @ {profile}",
        motivation=f"Promoted from {summary['id']} ({detail.get('profile')}) to verify at {profile}. "
                   f"{detail.get('motivation', '')}"[:2000],
        code=detail["code"], profile=profile, move=PROMOTED, parent_ids=(summary["id"],),
    )


def campaign_profile(stack: Endpoints, campaign_id: str) -> str:
    campaigns = memory_json(stack, "/stats", {"campaign_id": campaign_id})["campaigns"]
    return str(campaigns[0]["profile"]) if campaigns else ""


def promote(stack: Endpoints, campaign_id: str, to: str, top: int) -> list[ProposalCreated]:
    experiments = campaign_experiments(stack, campaign_id)
    source = campaign_profile(stack, campaign_id)
    if source == to:
        raise CampaignError(f"campaign {campaign_id} already ran at {to}: promote to a larger profile")
    chosen = top_runs(experiments, source, top)
    if not chosen:
        raise CampaignError(f"campaign {campaign_id} has no trained run with a fitness at {source} to promote")
    proposals = [promotion(stack, summary, to) for summary in chosen]
    asyncio.run(publish_events(stack.nats_url, *proposals))
    return proposals


def wait_for(stack: Endpoints, ids: list[str], progress: Callable[[dict[str, str]], None],
             poll_s: float = 10.0) -> None:
    """Return once every promoted run has finished (trained, failed for good, or rejected)."""
    while True:
        statuses = {i: (_get_or_none(stack, i) or {}).get("status", "queued") for i in ids}
        progress(statuses)
        if all(status in FINISHED for status in statuses.values()):
            return
        time.sleep(poll_s)


def _get_or_none(stack: Endpoints, experiment_id: str) -> dict[str, Any] | None:
    response = memory_response(stack, f"/experiments/{experiment_id}")
    return None if response.status_code == 404 else response.json()["experiment"]


@dataclass(frozen=True)
class StagePair:
    name: str
    kind: str  # run, baseline
    first: float
    second: float


@dataclass(frozen=True)
class StageAgreement:
    source: str
    target: str
    pairs: list[StagePair]

    def correlation(self, kind: str | None = None) -> tuple[float | None, int]:
        chosen = [p for p in self.pairs if kind is None or p.kind == kind]
        return spearman([p.first for p in chosen], [p.second for p in chosen]), len(chosen)


def agreement(stack: Endpoints, campaign_id: str, to: str) -> StageAgreement:
    """Val losses at both stages: each promoted run with the run it promotes, and each baseline measured at both."""
    experiments = {e["id"]: e for e in campaign_experiments(stack, campaign_id)}
    source = campaign_profile(stack, campaign_id)
    pairs = []
    for experiment in experiments.values():
        parent = experiments.get(experiment["parent_ids"][0]) if experiment.get("parent_ids") else None
        if experiment.get("profile") == to and parent is not None and experiment["id"] == promoted_id(
                parent["id"], to) and experiment.get("val_loss") is not None and parent.get("val_loss") is not None:
            pairs.append(StagePair(parent.get("name") or parent["id"], "run", parent["val_loss"],
                                   experiment["val_loss"]))
    first = {m["mixer"]: m for m in memory_json(stack, f"/baselines/{source}")["mixers"]}
    second = {m["mixer"]: m for m in memory_json(stack, f"/baselines/{to}")["mixers"]}
    for mixer in sorted(set(first) & set(second)):
        if first[mixer]["val_loss_mean"] is not None and second[mixer]["val_loss_mean"] is not None:
            pairs.append(StagePair(mixer, "baseline", first[mixer]["val_loss_mean"], second[mixer]["val_loss_mean"]))
    return StageAgreement(source, to, pairs)
