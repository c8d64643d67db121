"""What the web UI's pages show, read from the projection: plain data the templates lay out.

Every verdict shown here is the one the rest of the lab uses: a val loss against another beyond the seed noise
(``shared.noise.compare``, the profile's noise floor standing in for a single seed's spread), the fitness terms as
``fitness.computed`` carried them, the diff against the parent as ``shared.mixer.edit.unified_diff`` makes it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from services.memory import queries
from services.memory.projection import CAMPAIGNS, EXPERIMENTS, FAILURES
from services.memory.verdicts import (
    Baselines,
    Curve,
    ProfileBaselines,
    Verdicts,
    curve_points,
    experiments_by_id,
    measured_loss,
    verdicts,
)
from shared.mixer.baselines import BASELINES, baseline_of_ref
from shared.mixer.edit import unified_diff
from shared.noise import Measured

Doc = dict[str, Any]


# --- the leaderboard ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardRow:
    rank: int
    doc: Doc
    loss: Measured | None
    verdicts: Verdicts


@dataclass(frozen=True)
class Board:
    campaign_id: str | None
    rows: list[BoardRow]
    total: int
    stats: Doc
    campaigns: list[Doc]


def leaderboard(db: Database, campaign_id: str | None, limit: int) -> Board:
    """Experiments by fitness (those without one after), each with its verdicts, and the campaign's stats."""
    total, docs = queries.list_experiments(db, campaign_id=campaign_id, sort="fitness", limit=limit)
    # Listed by fitness first, the rest by time: the store's order of missing values is not to be relied on.
    docs.sort(key=lambda d: (d.get("fitness_total") is None, -(d.get("fitness_total") or 0.0)))
    parents = experiments_by_id(db, {p for d in docs for p in (d.get("parent_ids") or [])[:1]})
    baselines = Baselines(db)
    rows = [BoardRow(rank, d, measured_loss(d), verdicts(d, parents, baselines.at(d.get("profile") or "")))
            for rank, d in enumerate(docs, start=1)]
    every = sorted(db[CAMPAIGNS].find(), key=lambda c: str(c.get("started_at", "")))
    return Board(campaign_id, rows, total, queries.campaign_stats(db, campaign_id), every)


# --- one experiment -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    attempt: int
    failure: Doc | None  # the error this attempt ended in; None for the attempt that trained
    fix: Doc | None  # the debugger's patch of that error


@dataclass(frozen=True)
class ExperimentView:
    doc: Doc
    loss: Measured | None
    verdicts: Verdicts
    parents: list[tuple[str, Doc | None]]  # (id, its experiment, None for a baseline or one not here)
    children: list[Doc]
    parent_code: str | None
    diff: str
    curves: dict[str, Curve]  # label -> curve; the run's own first
    attempts: list[Attempt]
    tasks: list[str]


def parent_code(doc: Doc, parents: dict[str, Doc]) -> str | None:
    """The code the experiment was derived from: its first parent's (an experiment's, or a built-in baseline's)."""
    first = (doc.get("parent_ids") or [None])[0]
    if first is None:
        return None
    name = baseline_of_ref(first)
    if name is not None:
        return BASELINES[name].read_text()
    parent = parents.get(first)
    return parent.get("code") if parent else None


def experiment_curves(doc: Doc, parents: dict[str, Doc], baselines: ProfileBaselines) -> dict[str, Curve]:
    curves: dict[str, Curve] = {}
    if doc.get("train"):
        curves[doc.get("name") or doc["_id"]] = curve_points(doc["train"]["curve"])
    first = (doc.get("parent_ids") or [None])[0]
    parent = parents.get(first or "")
    if parent and parent.get("train") and parent.get("profile") == doc.get("profile"):
        curves[f"parent: {parent.get('name') or parent['_id']}"] = curve_points(parent["train"]["curve"])
    for name, curve in sorted(baselines.curves.items()):
        curves[f"baseline: {name}"] = curve
    return curves


def attempts(db: Database, doc: Doc) -> list[Attempt]:
    failures = sorted(db[FAILURES].find({"experiment_id": doc["_id"]}), key=lambda f: f["attempt"])
    found = [Attempt(f["attempt"], f, f.get("fix")) for f in failures]
    if doc.get("train"):
        found.append(Attempt(doc["train"]["attempt"], None, None))
    return found


def experiment(db: Database, experiment_id: str) -> ExperimentView | None:
    doc = queries.get_experiment(db, experiment_id)
    if doc is None:
        return None
    parent_ids = list(doc.get("parent_ids") or [])
    family = queries.lineage(db, doc)
    parents = {p["_id"]: p for p in family.parents}
    baselines = ProfileBaselines.read(db, doc.get("profile") or "")
    before = parent_code(doc, parents)
    tasks = sorted({t for run in (doc.get("seed_runs") or {}).values() for t in run.get("benchmarks") or {}})
    return ExperimentView(
        doc=doc, loss=measured_loss(doc), verdicts=verdicts(doc, parents, baselines),
        parents=[(p, parents.get(p)) for p in parent_ids], children=family.children,
        parent_code=before, diff=unified_diff(before, doc.get("code") or "", "parent", "this") if before else "",
        curves=experiment_curves(doc, parents, baselines), attempts=attempts(db, doc), tasks=tasks,
    )


# --- the lineage tree ---------------------------------------------------------------------------------------------


@dataclass
class TreeNode:
    id: str
    doc: Doc | None  # None for a root that is not an experiment here (a baseline)
    children: list[TreeNode] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.doc is None:
            return baseline_of_ref(self.id) or self.id
        return self.doc.get("name") or self.id


def lineage_tree(db: Database, campaign_id: str | None) -> list[TreeNode]:
    """The experiments as a forest by first parent (the one each was derived from). A parent that is no
    experiment here (a baseline, or one of another campaign) is a root of its own."""
    docs = list(db[EXPERIMENTS].find({"campaign_id": campaign_id} if campaign_id else {}).sort("created_at", 1))
    nodes = {d["_id"]: TreeNode(d["_id"], d) for d in docs}
    roots: dict[str, TreeNode] = {}
    by_parent: dict[str, list[TreeNode]] = defaultdict(list)
    for d in docs:
        first = (d.get("parent_ids") or [None])[0]
        if first is None:
            roots[d["_id"]] = nodes[d["_id"]]
        else:
            by_parent[first].append(nodes[d["_id"]])
    for parent_id, children in by_parent.items():
        holder = nodes.get(parent_id) or roots.setdefault(parent_id, TreeNode(parent_id, None))
        holder.children.extend(children)
    return sorted(roots.values(), key=lambda n: (n.doc is not None, n.id))
