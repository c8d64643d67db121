"""Memory's query API: an ``APIRouter`` the service mounts beside ``/healthz`` and ``/metrics``.

Handlers are plain ``def`` so FastAPI runs the blocking pymongo and FAISS calls in its thread pool. The database
and the vector store are injected through ``MemoryApiDeps`` (a FastAPI dependency, overridable in tests).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pymongo.database import Database

from services.memory import moves, queries
from services.memory.fitness import get_baseline
from services.memory.projection import FAILURES
from services.memory.vectors import COGNITION_INDEX, INDEX_NAMES, VectorStore

Status = Literal["proposed", "rejected", "training", "failed", "patched", "gave_up", "trained"]
MAX_PAGE = 200
MAX_K = 100


@dataclass
class MemoryApiDeps:
    db: Database
    vectors: VectorStore | None = None
    # The last stream sequence the store projection applied, for reads "as of" a sequence (None: always current).
    projected_seq: Callable[[], int] | None = None

    def require_projected(self, as_of: int) -> None:
        """409 until the projection has applied event ``as_of``: the caller retries rather than read a view
        that does not hold the event it is handling yet."""
        at = self.projected_seq() if self.projected_seq is not None else as_of
        if as_of > at:
            raise HTTPException(409, f"not yet projected: asked as of sequence {as_of}, the store is at {at}")


# --- response models ----------------------------------------------------------------------------------------------


class BaselineOut(BaseModel):
    mixer: str
    seeds: int = Field(description="seeds with a measured val loss")
    val_loss_mean: float | None
    val_loss_std: float | None = Field(description="the seeds' spread: the noise floor; null below 2 seeds")
    bench_mean: float | None
    bench_std: float | None
    runs: dict[str, dict[str, Any]] = Field(description="seed -> what that run measured")


class MeasuredOut(BaseModel):
    mixer: str
    mean: float
    sd: float | None
    seeds: int


class TaskSignalOut(BaseModel):
    task: str
    between_sd: float | None = Field(description="spread of the baselines' mean scores")
    within_sd: float | None = Field(description="seed-to-seed spread of one baseline's score, pooled")
    mixers: int
    counts: bool = Field(description="the task separates mixers beyond seed noise: it counts in the fitness")
    f: float | None = Field(None, description="one-way analysis of variance: between over within baselines")
    p: float | None = Field(None, description="the chance of an F this large from seed noise alone")
    threshold: float | None = Field(None, description="what p must be below among the profile's tasks (Holm)")
    reason: str


class BaselinesOut(BaseModel):
    profile: str
    reference: BaselineOut | None = Field(description="the fitness reference; null until measured")
    fitness_ready: bool = Field(description="the reference has the seeds fitness needs: experiments get a fitness")
    mixers: list[BaselineOut]
    noise_sd: float | None = Field(None, description="the val loss's seed spread, pooled over the baselines")
    best: MeasuredOut | None = Field(None, description="the baseline with the lowest mean val loss")
    signal: dict[str, TaskSignalOut] = Field({}, description="per task: does it separate the baselines?")
    signal_tasks: list[str] = Field([], description="the tasks that count in the benchmark term")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FitnessOut(_Model):
    loss_term: float
    benchmark_term: float
    judge_term: float
    total: float


class JudgeOut(_Model):
    performance: int
    innovation: int
    complexity: int
    weighted: float = Field(description="the judge's weighted score of the three, computed in its code (1–10)")
    rationale: str


class ExperimentSummary(_Model):
    # Documents say _id / fitness_total; the API says id / fitness.
    id: str = Field(validation_alias="_id")
    campaign_id: str
    name: str
    status: Status | Literal["baseline"] = Field(description="\"baseline\": a built-in baseline in the parent pool")
    parent_ids: list[str]
    fitness: float | None = Field(None, validation_alias="fitness_total")
    profile: str = ""
    val_loss: float | None = Field(None, description="the mean over the seeds it was trained on")
    val_loss_sd: float | None = Field(None, description="the spread over its seeds; null below two seeds")
    seeds: int = Field(0, description="seeds trained")
    benchmarks: dict[str, float] = Field({}, description="each task's mean score over the seeds")
    awaiting_replicate: bool = Field(False, description="in the top k on one seed: a second seed is training, "
                                                        "and it is not drawn as a parent until then")
    bench_mean: float | None = None
    attempts: int = 0
    move: str = Field("", description="the library move its proposal applied, or free / submitted / promoted")
    moves_in_line: list[str] = Field([], description="the library moves made along its first-parent line")
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class CodeVersionOut(_Model):
    version: int
    source: Literal["proposal", "debug"]
    attempt: int
    code: str
    diff: str
    diagnosis: str
    at: dt.datetime


class TrainOut(_Model):
    attempt: int
    profile: str
    train_loss: float | None
    val_loss: float | None
    params: int
    tokens: int
    tokens_per_s: float
    device: str
    gpu_seconds: float
    cpu_core_seconds: float
    checkpoint_path: str
    curve: list[tuple[int, int, float | None]] = Field(description="(step, tokens, loss) points")


class SectionOut(_Model):
    title: str
    body: str


class AnalysisOut(_Model):
    sections: list[SectionOut]
    compared_with: list[str]
    gallery_path: str
    comparison: list[dict[str, Any]] = Field([], description="the comparison table, built from the measurements")
    signal_tasks: list[str] = []
    removed_statements: list[str] = Field([], description="report statements that contradicted the table")


class ExperimentDetail(ExperimentSummary):
    motivation: str
    code: str
    code_versions: list[CodeVersionOut]
    cognition_ids: list[str]
    train: TrainOut | None = None
    analysis: AnalysisOut | None = None
    seed_runs: dict[str, dict[str, Any]] = Field({}, description="seed -> that run's val loss and scores")
    replicate: dict[str, Any] | None = Field(None, description="the replicate asked for it, and how it went")
    judge: JudgeOut | None = None
    fitness_terms: FitnessOut | None = Field(None, validation_alias="fitness")
    last_error: dict[str, Any] | None = None
    rejection: dict[str, Any] | None = None
    gave_up: dict[str, Any] | None = None
    spend: dict[str, float]
    llm: dict[str, Any]


class LineageOut(_Model):
    parents: list[ExperimentSummary]
    missing_parents: list[str] = Field(description="parent ids with no experiment here (e.g. built-in baselines)")
    children: list[ExperimentSummary]
    siblings: list[ExperimentSummary]


class ExperimentWithLineage(_Model):
    experiment: ExperimentDetail
    lineage: LineageOut


class ExperimentPage(_Model):
    total: int
    limit: int
    offset: int
    items: list[ExperimentSummary]


class ParentSampleOut(_Model):
    strategy: Literal["two_tier", "ucb"]
    seed: int | None
    ranked: int = Field(description="how many experiments have a fitness")
    parent: ExperimentSummary | None = Field(description="null while nothing has a fitness: start from a baseline")
    references: list[ExperimentSummary]
    ucb_scores: dict[str, float] = {}


class SearchHit(_Model):
    id: str
    score: float = Field(description="cosine similarity")
    label: str = Field("", description="experiment name, failure kind or cognition title")
    source: str | None = None
    page: int | None = None
    text: str = Field("", description="cognition only: the entry's design insight and implementation guidance")


class BehaviourOut(_Model):
    experiment_id: str = Field(validation_alias="_id")
    name: str = ""
    behaviour: list[float]


class BehavioursOut(_Model):
    profile: str
    items: list[BehaviourOut]


class SearchResult(_Model):
    index: str
    query: str
    hits: list[SearchHit]


class FixOut(_Model):
    attempt: int
    diagnosis: str
    diff: str


class FailureFixHit(_Model):
    id: str
    score: float
    experiment_id: str
    attempt: int
    error_kind: str
    message: str
    traceback_tail: str
    outcome: str
    fix: FixOut | None
    fix_worked: bool | None
    signature: str = ""


class FailureSearchResult(_Model):
    query: str
    hits: list[FailureFixHit]


class MoveStepOut(_Model):
    site: str
    anchor: str
    instruction: str


class LearnedMoveOut(_Model):
    id: str = Field(validation_alias="_id")
    title: str
    rationale: str
    provenance: str = Field(description="cognition:<entry> or analysis:<experiment> it was learned from")
    steps: list[MoveStepOut]
    cognition_ids: list[str] = []
    requires: str = ""
    llm_model: str = ""
    campaign_id: str = ""
    learned_with: str = Field("", description="the experiment whose proposal validated it")
    learned_at: dt.datetime | None = None


class MoveRecordOut(_Model):
    drawn: int = Field(description="experiments whose proposal named it")
    settled: int = Field(description="of those, the ones trained, rejected or given up")
    trained: int
    beat_parent: int = Field(description="trained and better than their parent beyond seed noise")


class MovesOut(_Model):
    learned: list[LearnedMoveOut]
    records: dict[str, MoveRecordOut] = Field(description="move id (or free: the LLM's own change) -> its record; "
                                                          "moves never drawn are absent")


class StatsOut(_Model):
    campaign_id: str | None
    experiments: int
    by_status: dict[str, int]
    yield_: float = Field(alias="yield", description="trained / experiments")
    best_fitness: float | None
    best_experiment_id: str | None
    failures: int
    patches: int
    fix_rate: float | None = Field(
        description="of the patched failures retrained so far, the share whose next attempt trained")
    spend: dict[str, float]
    campaigns: list[dict[str, Any]]

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --- the router ---------------------------------------------------------------------------------------------------


def _summaries(docs: list[dict[str, Any]]) -> list[ExperimentSummary]:
    return [ExperimentSummary.model_validate(d) for d in docs]


def _require_vectors(deps: MemoryApiDeps) -> VectorStore:
    if deps.vectors is None:
        raise HTTPException(503, "similarity search is not available: this memory service has no vector store")
    return deps.vectors


def create_router(deps: MemoryApiDeps) -> APIRouter:
    """The query API over ``deps``; mount it with ``app.include_router``."""
    router = APIRouter(tags=["memory"])

    def get_deps() -> MemoryApiDeps:
        return deps

    _experiment_routes(router, get_deps)
    _search_routes(router, get_deps)
    return router


def _experiment_routes(router: APIRouter, get_deps: Callable[[], MemoryApiDeps]) -> None:
    @router.get("/experiments", response_model=ExperimentPage, summary="List experiments")
    def list_experiments(
        status: Status | None = Query(None, description="only experiments in this status"),
        campaign_id: str | None = Query(None, min_length=1),
        sort: Literal["fitness", "time"] = Query("time", description="fitness total, or creation time"),
        order: Literal["asc", "desc"] = Query("desc"),
        limit: int = Query(50, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> ExperimentPage:
        total, docs = queries.list_experiments(deps.db, status=status, campaign_id=campaign_id, sort=sort,
                                               descending=order == "desc", limit=limit, offset=offset)
        return ExperimentPage(total=total, limit=limit, offset=offset, items=_summaries(docs))

    @router.get("/experiments/{experiment_id}", response_model=ExperimentWithLineage,
                summary="One experiment with its lineage", responses={404: {"description": "no such experiment"}})
    def get_experiment(
        experiment_id: str = Path(min_length=1, max_length=200),
        as_of: int = Query(0, ge=0, description="answer 409 until the projection has applied this stream sequence"),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> ExperimentWithLineage:
        deps.require_projected(as_of)
        doc = queries.get_experiment(deps.db, experiment_id)
        if doc is None:
            raise HTTPException(404, f"no experiment {experiment_id!r}")
        family = queries.lineage(deps.db, doc)
        return ExperimentWithLineage(
            experiment=ExperimentDetail.model_validate(doc),
            lineage=LineageOut(parents=_summaries(family.parents), missing_parents=family.missing_parents,
                               children=_summaries(family.children), siblings=_summaries(family.siblings)),
        )

    @router.get("/sample/parents", response_model=ParentSampleOut, summary="Sample a parent and references")
    def sample_parents(
        strategy: Literal["two_tier", "ucb"] = Query("two_tier"),
        references: int = Query(4, ge=0, le=40, description="how many references to draw"),
        seed: int | None = Query(None, description="same seed, same sample (over the same experiments)"),
        exploration: float = Query(1.0, ge=0.0, le=10.0, description="UCB's exploration constant"),
        campaign_id: str | None = Query(None, min_length=1),
        islands: int = Query(0, ge=0, le=64, description="island sampling: how many islands (0: none)"),
        island: int | None = Query(None, ge=0, description="with islands: draw from this island's experiments"),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> ParentSampleOut:
        sample = queries.sample_parents(deps.db, strategy=strategy, references=references, seed=seed,
                                        campaign_id=campaign_id, exploration=exploration, island=island,
                                        islands=islands)
        parent = ExperimentSummary.model_validate(sample.parent) if sample.parent else None
        return ParentSampleOut(strategy=sample.strategy, seed=seed, ranked=sample.ranked, parent=parent,
                               references=_summaries(sample.references), ucb_scores=sample.ucb_scores)

    @router.get("/behaviours", response_model=BehavioursOut, summary="Trained mixers' behaviour signatures")
    def behaviours(
        profile: str = Query(min_length=1, description="the training profile the signatures were probed at"),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> BehavioursOut:
        return BehavioursOut(profile=profile, items=[BehaviourOut.model_validate(doc)
                                                     for doc in queries.behaviours(deps.db, profile)])

    @router.get("/baselines/{profile}", response_model=BaselinesOut, summary="A profile's measured baselines")
    def baselines(profile: str = Path(min_length=1, max_length=40),
                  deps: MemoryApiDeps = Depends(get_deps)) -> BaselinesOut:
        summary, mixers = queries.baselines(deps.db, profile)
        summary = summary or {}
        reference = BaselineOut.model_validate(summary) if summary.get("mixer") else None
        ready = get_baseline(deps.db, profile) is not None
        return BaselinesOut(profile=profile, reference=reference, fitness_ready=ready,
                            mixers=[BaselineOut.model_validate(doc) for doc in mixers],
                            noise_sd=summary.get("noise_sd"), best=summary.get("best"),
                            signal=summary.get("signal") or {}, signal_tasks=summary.get("signal_tasks") or [])

    @router.get("/moves", response_model=MovesOut, summary="The moves learned, and every move's record")
    def list_moves(
        campaign_id: str | None = Query(None, min_length=1, description="records of this campaign's experiments only"),
        model: str | None = Query(None, min_length=1, description="records of the proposals this LLM wrote only"),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> MovesOut:
        records = moves.move_records(deps.db, campaign_id, model)
        return MovesOut(learned=[LearnedMoveOut.model_validate(doc) for doc in moves.learned_moves(deps.db)],
                        records={move: MoveRecordOut.model_validate(r.as_dict()) for move, r in records.items()})

    @router.get("/stats", response_model=StatsOut, response_model_by_alias=True, summary="Campaign statistics")
    def stats(
        campaign_id: str | None = Query(None, min_length=1), deps: MemoryApiDeps = Depends(get_deps),
    ) -> StatsOut:
        return StatsOut.model_validate(queries.campaign_stats(deps.db, campaign_id))


def _search_routes(router: APIRouter, get_deps: Callable[[], MemoryApiDeps]) -> None:
    @router.get("/failures/search", response_model=FailureSearchResult, summary="Similar past failures and fixes")
    def search_failures(
        q: str = Query(min_length=1, max_length=4000, description="error text: kind, message, traceback"),
        k: int = Query(5, ge=1, le=MAX_K), only_fixed: bool = Query(False, description="only failures with a fix"),
        signature: str = Query("", max_length=400, description="the failure's error signature: fixes that worked "
                               "on the same signature come first"),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> FailureSearchResult:
        vectors = _require_vectors(deps)
        # Over-fetch when filtering, so k fixed pairs can still come back.
        hits = vectors.search("failures", q, k * 4 if only_fixed else k)
        docs = {d["_id"]: d for d in deps.db[FAILURES].find({"_id": {"$in": [h.id for h in hits]}})}
        out = [_failure_hit(h.id, h.score, docs[h.id]) for h in hits if h.id in docs]
        if signature:  # a fix that worked on the same error, however differently its mixer reads
            seen = {hit.id for hit in out}
            same = deps.db[FAILURES].find({"signature": signature, "fix_worked": True}).sort("at", -1).limit(k)
            out += [_failure_hit(d["_id"], 1.0, d) for d in same if d["_id"] not in seen]
        if only_fixed:
            out = [hit for hit in out if hit.fix is not None]
        # Fixes that worked first (those on the same error signature before the others), then by similarity.
        out.sort(key=lambda hit: (hit.fix_worked is not True, not signature or hit.signature != signature,
                                  -hit.score))
        return FailureSearchResult(query=q, hits=out[:k])

    @router.get("/search/{index}", response_model=SearchResult, summary="Similarity search over one index",
                responses={404: {"description": "no such index"}})
    def search(
        index: str = Path(description=f"one of {', '.join(INDEX_NAMES)}"),
        q: str = Query(min_length=1, max_length=4000), k: int = Query(10, ge=1, le=MAX_K),
        deps: MemoryApiDeps = Depends(get_deps),
    ) -> SearchResult:
        if index not in INDEX_NAMES:
            raise HTTPException(404, f"no index {index!r}; known: {', '.join(INDEX_NAMES)}")
        hits = _require_vectors(deps).search(index, q, k)
        return SearchResult(index=index, query=q, hits=_labelled(deps.db, index, hits))


def _failure_hit(failure_id: str, score: float, doc: dict[str, Any]) -> FailureFixHit:
    fix = doc.get("fix")
    return FailureFixHit(
        id=failure_id, score=score, experiment_id=doc["experiment_id"], attempt=doc["attempt"],
        error_kind=doc["error_kind"], message=doc["message"], traceback_tail=(doc.get("traceback") or "")[-1500:],
        outcome=doc.get("outcome", "unpatched"), fix_worked=doc.get("fix_worked"), signature=doc.get("signature", ""),
        fix=FixOut(attempt=fix["attempt"], diagnosis=fix["diagnosis"], diff=fix["diff"]) if fix else None,
    )


def _labelled(db: Database, index: str, hits: list[Any]) -> list[SearchHit]:
    """Attach a human label (and, for cognition, source and page) to each hit."""
    ids = [h.id for h in hits]
    if index == COGNITION_INDEX:
        docs = {d["_id"]: d for d in db["cognition"].find({"_id": {"$in": ids}})}
        return [SearchHit(id=h.id, score=h.score, label=docs.get(h.id, {}).get("title", ""),
                          source=docs.get(h.id, {}).get("source"), page=docs.get(h.id, {}).get("page"),
                          text=design_text(docs.get(h.id, {})))
                for h in hits]
    if index == "failures":
        docs = {d["_id"]: d for d in db[FAILURES].find({"_id": {"$in": ids}}, {"error_kind": 1, "message": 1})}
        labels = {i: f"{d['error_kind']}: {d['message']}"[:200] for i, d in docs.items()}
    else:
        docs = {d["_id"]: d for d in db["experiments"].find({"_id": {"$in": ids}}, {"name": 1})}
        labels = {i: d.get("name", "") for i, d in docs.items()}
    return [SearchHit(id=h.id, score=h.score, label=labels.get(h.id, "")) for h in hits]


def design_text(doc: dict[str, Any], limit: int = 1500) -> str:
    """What a cognition entry says to build: a curated entry's insight, idea and implementation guidance, a
    document chunk's own text."""
    curated = [doc.get(key) or "" for key in ("insight", "idea", "implementation")]
    return ("\n".join(part for part in curated if part) or doc.get("text") or "")[:limit]
