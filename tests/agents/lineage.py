"""Small scripted lineages for the agents' tests: baselines measured at a profile, a proposal, its training."""

from __future__ import annotations

import datetime as dt
import itertools

from shared.events import BaselineMeasured, CurvePoint, Event, ProposalCreated, TrainSucceeded
from shared.mixer.baselines import BASELINES

PROFILE = "smoke"
AT = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
_ids = itertools.count(1)


def envelope(experiment: str = "", campaign: str = "c-lineage") -> dict[str, object]:
    n = next(_ids)
    return {"event_id": f"lineage-{n}", "occurred_at": AT + dt.timedelta(seconds=n), "producer": "test",
            "campaign_id": campaign, "experiment_id": experiment}


def baselines(losses: dict[str, tuple[float, ...]], tasks: dict[str, dict[str, tuple[float, ...]]] | None = None,
              reference: str = "deltanet", profile: str = PROFILE) -> list[Event]:
    """One ``baseline.measured`` per seed: ``losses`` mixer -> val loss per seed, ``tasks`` mixer -> task -> score
    per seed."""
    events: list[Event] = []
    for mixer, per_seed in losses.items():
        for seed, loss in enumerate(per_seed):
            scores = {task: values[seed] for task, values in (tasks or {}).get(mixer, {}).items()}
            curve = (CurvePoint(step=0, tokens=0, loss=5.5), CurvePoint(step=10, tokens=20_480, loss=loss))
            events.append(BaselineMeasured(**envelope(campaign=""), profile=profile, mixer=mixer, seed=seed,
                                           val_loss=loss, benchmarks=scores, tokens=200_000, device="cpu",
                                           fitness_reference=mixer == reference, curve=curve))
    return events


def child(experiment: str, parent: str, val_loss: float, code: str | None = None,
          benchmarks: dict[str, float] | None = None, name: str = "",
          profile: str = PROFILE) -> tuple[ProposalCreated, TrainSucceeded]:
    """A proposal derived from ``parent`` (an experiment id or ``baseline:<name>``) and its successful training."""
    source = code or BASELINES["deltanet"].read_text().replace("beta = ", "beta = 0.5 * ", 1)
    proposal = ProposalCreated(**envelope(experiment), name=name or experiment, motivation="Halve the write.",
                               code=source, profile=profile, parent_ids=(parent,))
    run = TrainSucceeded(**envelope(experiment), attempt=1, profile=profile,
                         curve=(CurvePoint(step=0, tokens=0, loss=5.5),
                                CurvePoint(step=10, tokens=20_480, loss=val_loss)),
                         train_loss=val_loss, val_loss=val_loss, benchmarks=benchmarks or {}, params=1_000_000,
                         tokens=200_000, tokens_per_s=9_000.0, device="cpu", gpu_seconds=0.0, cpu_core_seconds=30.0,
                         checkpoint_path="")
    return proposal, run
