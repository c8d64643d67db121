"""Noise-aware acceptance (docs/architecture.md §7): a run that enters its profile's top k on one seed is trained
again on another seed before it ranks as a parent of choice.

Memory reacts to its own ``fitness.computed`` once projected: the ranking it needs is in the store at that point.
The request's id derives from the experiment and the seed, so a second fitness event for the same run (the judge
re-scoring) never asks twice.
"""

from __future__ import annotations

from pymongo.database import Database

from services.memory.projection import EXPERIMENTS
from services.memory.queries import count
from shared.events import FitnessComputed, ReplicateRequested, derived_event_id, utc_now
from shared.mixer.profiles import profile_seed

PRODUCER = "memory"
DEFAULT_TOP_K = 3
SEEDS_WANTED = 2


def replicate_request(db: Database, fitness: FitnessComputed, top_k: int) -> ReplicateRequested | None:
    """The replicate owed to the experiment whose fitness was just projected, if it now ranks in the top ``top_k``
    of its profile on fewer than two seeds and none was requested yet."""
    doc = db[EXPERIMENTS].find_one({"_id": fitness.experiment_id})
    if top_k <= 0 or doc is None or doc.get("fitness_total") is None or doc.get("replicate") is not None:
        return None
    if doc.get("seeds", 0) + doc.get("failed_seeds", 0) >= SEEDS_WANTED:
        return None
    profile = doc.get("profile") or ""
    rank = 1 + count(db[EXPERIMENTS], {"profile": profile, "has_fitness": True,
                                        "fitness_total": {"$gt": doc["fitness_total"]}})
    if rank > top_k:
        return None
    seed = profile_seed(profile) + 1
    return ReplicateRequested(
        event_id=derived_event_id(fitness.experiment_id, "replicate", seed), occurred_at=utc_now(),
        producer=PRODUCER, campaign_id=fitness.campaign_id, experiment_id=fitness.experiment_id,
        correlation_id=fitness.correlation_id or fitness.event_id, causation_id=fitness.event_id,
        profile=profile, code=doc.get("code") or "", seed=seed,
        reason=f"ranks {rank} of the {profile} leaderboard (top {top_k}) on one seed",
    )
