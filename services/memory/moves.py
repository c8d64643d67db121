"""The move library as the log made it, and each move's record, read off the projection.

A move's record (the LLM's own change, ``free``, and recombination, ``crossover``, have one too) counts the
experiments whose proposal named it (``proposal.created``/``proposal.rejected`` ``move``): drawn, settled (nothing
more will happen to it: trained, rejected or given up), trained, and beat its parent beyond seed noise (the
verdict the web UI shows, ``services.memory.verdicts``). Everything is derived from experiment documents at query
time, so a replay that rebuilds the experiments rebuilds the records with them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from pymongo.database import Database

from services.memory.projection import EXPERIMENTS, MOVES
from services.memory.verdicts import Baselines, experiments_by_id, verdicts
from shared.events import UNCHOSEN_MOVES

Doc = dict[str, Any]
SETTLED = ("trained", "rejected", "gave_up")
RECORD_FIELDS = {"move": 1, "status": 1, "parent_ids": 1, "profile": 1, "val_loss": 1, "val_loss_sd": 1, "seeds": 1,
                 "campaign_id": 1}


@dataclass
class MoveRecord:
    drawn: int = 0
    settled: int = 0
    trained: int = 0
    beat_parent: int = 0  # trained, and better than its parent beyond seed noise

    def as_dict(self) -> Doc:
        return asdict(self)


def learned_moves(db: Database) -> list[Doc]:
    """Every move a campaign added, oldest first."""
    return list(db[MOVES].find({}).sort([("_seq", 1)]))


def move_records(db: Database, campaign_id: str | None = None, model: str | None = None) -> dict[str, MoveRecord]:
    """Each move's record over every experiment that named it: one campaign's with ``campaign_id``, the proposals
    one LLM wrote with ``model``."""
    query: Doc = {"move": {"$nin": sorted(UNCHOSEN_MOVES)}}
    if campaign_id:
        query["campaign_id"] = campaign_id
    if model:
        query["llm.model"] = model
    docs = list(db[EXPERIMENTS].find(query, RECORD_FIELDS))
    parents = experiments_by_id(db, {d["parent_ids"][0] for d in docs if d.get("parent_ids")})
    baselines = Baselines(db)
    records: dict[str, MoveRecord] = defaultdict(MoveRecord)
    for doc in docs:
        record = records[doc["move"]]
        record.drawn += 1
        status = doc.get("status")
        record.settled += status in SETTLED
        if status != "trained":
            continue
        record.trained += 1
        record.beat_parent += verdicts(doc, parents, baselines.at(doc.get("profile") or "")).parent == "better"
    return dict(records)
