"""Verdicts beyond seed noise, read from the projection: an experiment's val loss against its parent's and against
the profile's best baseline's (``shared.noise.compare``, the profile's noise floor standing in for a single seed's
spread). The web UI shows them and the move records count them, so both say the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from services.memory import queries
from services.memory.projection import EXPERIMENTS
from shared.mixer.baselines import baseline_of_ref
from shared.noise import Measured, Verdict, compare

Doc = dict[str, Any]
# A curve as the chart draws it: (tokens seen, loss) points.
Curve = list[tuple[float, float]]


@dataclass(frozen=True)
class Verdicts:
    """One experiment's val loss against its parent's and the profile's best baseline's, beyond seed noise
    (None: nothing to compare with, or no noise measured at the profile)."""

    parent: Verdict | None
    best_baseline: Verdict | None


@dataclass
class ProfileBaselines:
    """What a profile's baselines measured: each mixer's val loss over seeds and first-seed curve, the noise
    floor and the best of them."""

    profile: str
    losses: dict[str, Measured] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    noise_sd: float | None = None
    best: str | None = None

    @classmethod
    def read(cls, db: Database, profile: str) -> ProfileBaselines:
        summary, mixers = queries.baselines(db, profile)
        found = cls(profile, noise_sd=(summary or {}).get("noise_sd"), best=((summary or {}).get("best") or {})
                    .get("mixer"))
        for doc in mixers:
            runs = doc.get("runs") or {}
            measured = Measured.of(r.get("val_loss") for r in runs.values())
            if measured is not None:
                found.losses[doc["mixer"]] = measured
            first = next((runs[seed] for seed in sorted(runs) if runs[seed].get("curve")), None)
            if first is not None:
                found.curves[doc["mixer"]] = curve_points(first["curve"])
        return found


def curve_points(curve: list[Any]) -> Curve:
    """(tokens, loss) of each stored (step, tokens, loss) point that has a finite loss."""
    return [(float(tokens), float(loss)) for _, tokens, loss in curve if loss is not None]


def measured_loss(doc: Doc) -> Measured | None:
    if doc.get("val_loss") is None:
        return None
    return Measured(float(doc["val_loss"]), doc.get("val_loss_sd"), max(1, int(doc.get("seeds") or 1)))


class Baselines:
    """Each profile's baselines, read once per page."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_profile: dict[str, ProfileBaselines] = {}

    def at(self, profile: str) -> ProfileBaselines:
        if profile not in self._by_profile:
            self._by_profile[profile] = ProfileBaselines.read(self.db, profile)
        return self._by_profile[profile]


def parent_loss(doc: Doc, parents: dict[str, Doc], baselines: ProfileBaselines) -> Measured | None:
    """The first parent's val loss: an experiment's over its seeds, or a baseline's at the run's profile."""
    first = (doc.get("parent_ids") or [None])[0]
    if first is None:
        return None
    name = baseline_of_ref(first)
    if name is not None:
        return baselines.losses.get(name)
    parent = parents.get(first)
    # A parent trained at another profile (a promotion's) is not a like-for-like comparison.
    if parent is None or parent.get("profile") != doc.get("profile"):
        return None
    return measured_loss(parent)


def verdicts(doc: Doc, parents: dict[str, Doc], baselines: ProfileBaselines) -> Verdicts:
    loss = measured_loss(doc)
    if loss is None:
        return Verdicts(None, None)
    against_parent = parent_loss(doc, parents, baselines)
    best = baselines.losses.get(baselines.best) if baselines.best else None
    return Verdicts(
        parent=compare(loss, against_parent, baselines.noise_sd) if against_parent else None,
        best_baseline=compare(loss, best, baselines.noise_sd) if best else None,
    )


def experiments_by_id(db: Database, ids: set[str]) -> dict[str, Doc]:
    return {d["_id"]: d for d in db[EXPERIMENTS].find({"_id": {"$in": sorted(ids)}})} if ids else {}
