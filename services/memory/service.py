"""Memory's settings and wiring: projections, the query API, replays, the cognition base's events."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from nats.js import JetStreamContext
from pydantic import BaseModel, Field

from services.memory.api import MemoryApiDeps, create_router
from services.memory.cognition import COGNITION, SourceUpdate, cognition_events, read_sources, starter_update
from services.memory.handlers import Memory, ReplayJob, catch_up, project, replay
from services.memory.projection import Projector, digest
from services.memory.queries import ranked_experiments
from services.memory.replicates import DEFAULT_TOP_K
from services.memory.ui import create_ui_router
from services.memory.vectors import (
    CachingEmbedder,
    HashingEmbedder,
    MiniLMEmbedder,
    VectorStore,
)
from shared import bus, metrics
from shared.event_text import EventLine
from shared.events import DOMAIN_EVENTS
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
PRODUCER = "memory"
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")


class MemorySettings(ServiceSettings):
    service_name: str = "memory"
    # The projections apply events strictly in stream order: one message in flight.
    max_ack_pending: int = 1
    # "hashing" is a fast deterministic stand-in for tests of the plumbing; real campaigns use MiniLM.
    embedder: Literal["minilm", "hashing"] = "minilm"
    save_every_s: float = Field(default=30.0, gt=0)
    # How long ``cognition add`` waits for its events to be projected before it answers.
    project_timeout_s: float = Field(default=600.0, gt=0)
    # Runs that enter their profile's top k on one seed are trained on a second seed (0: never).
    replicate_top_k: int = Field(default=DEFAULT_TOP_K, ge=0)

    def vectors_dir(self, name: str = "vectors") -> Path:
        return self.data_dir / "memory" / name


class ReplayRequest(BaseModel):
    until_seq: int | None = Field(default=None, ge=1, description="rebuild the state as of this event")
    into: str | None = Field(default=None, description="a separate database to build into (a fork)")


class CognitionRequest(BaseModel):
    path: str = Field(description="a PDF, Markdown or text file, or a folder, on the memory service's machine")


class CognitionReport(BaseModel):
    files: int
    chunks: int
    skipped: list[str]


class ReplayStatus(BaseModel):
    target: str
    until_seq: int | None
    total: int
    done: int
    state: str
    error: str


def embedder_for(settings: MemorySettings) -> MiniLMEmbedder | HashingEmbedder:
    return HashingEmbedder() if settings.embedder == "hashing" else MiniLMEmbedder()


def admin_router(runtime: Runtime, memory: Memory, settings: MemorySettings) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])
    jobs: dict[str, ReplayJob] = {}
    tasks: set[asyncio.Task[None]] = set()

    @router.post("/replay", response_model=ReplayStatus, status_code=202, summary="Rebuild projections from the log")
    async def start_replay(request: ReplayRequest) -> ReplayStatus:
        if any(job.state == "running" for job in jobs.values()):
            raise HTTPException(409, "a replay is already running")
        target = memory
        if request.into is not None:
            if not DATABASE_NAME.fullmatch(request.into) or request.into == settings.mongo_db:
                raise HTTPException(422, f"'into' must be a new database name ([A-Za-z0-9_-], not "
                                         f"{settings.mongo_db!r})")
            vectors = VectorStore(memory.vectors.embedder, settings.vectors_dir(f"fork-{request.into}"))
            target = Memory(Projector(runtime.mongo[request.into]), vectors)
        job = ReplayJob(target=request.into or settings.mongo_db, until_seq=request.until_seq)
        jobs["last"] = job
        task = asyncio.create_task(replay(runtime.js, target, job))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return ReplayStatus(**vars(job))

    @router.get("/replay", response_model=ReplayStatus, summary="Progress of the last replay")
    async def replay_status() -> ReplayStatus:
        if "last" not in jobs:
            raise HTTPException(404, "no replay has run since the service started")
        return ReplayStatus(**vars(jobs["last"]))

    @router.get("/digest", summary="Digests of every projected collection and index (equal after a replay)")
    async def digests() -> dict[str, Any]:
        async with memory.lock:
            collections = await asyncio.to_thread(digest, runtime.db)
            indexes = await asyncio.to_thread(memory.vectors.digest)
        return {"collections": collections, "indexes": indexes, "seq": {"store": memory.projector.last_seq(),
                                                                         "vectors": memory.vectors.last_seq()}}

    @router.post("/cognition", response_model=CognitionReport, summary="Add papers to the cognition base")
    async def add_cognition(request: CognitionRequest) -> CognitionReport:
        """Reads the files, publishes what they hold as ``cognition.added`` and answers once it is projected."""
        path = Path(request.path)
        if not path.exists():
            raise HTTPException(404, f"{path} does not exist on the memory service's machine")
        updates, report = await asyncio.to_thread(read_sources, path, partial(known_cognition_ids, runtime))
        await publish_cognition(runtime, memory, updates, settings.project_timeout_s)
        return CognitionReport(files=report.files, chunks=report.chunks, skipped=list(report.skipped))

    return router


def known_cognition_ids(runtime: Runtime, source: str) -> list[str]:
    return [d["_id"] for d in runtime.db[COGNITION].find({"source": source}, {"_id": 1})]


async def publish_updates(runtime: Runtime, updates: list[SourceUpdate]) -> int:
    """Publish each source's ``cognition.added`` events; the stream sequence of the last (0 when none)."""
    last = 0
    for update in updates:
        for event in cognition_events(update, PRODUCER):
            last = (await bus.publish(runtime.js, event)).seq
    return last


async def publish_cognition(runtime: Runtime, memory: Memory, updates: list[SourceUpdate], timeout_s: float) -> None:
    """Publish each source's events, then wait until this service's own consumer has projected the last one."""
    await memory.projected(await publish_updates(runtime, updates), timeout_s)


async def seed_starter(runtime: Runtime, memory: Memory) -> None:
    """Publish the shipped starter base once per log: after that, the log has it and a replay brings it back."""
    seeded = await asyncio.to_thread(runtime.db[COGNITION].find_one, {"kind": "starter", "_seq": {"$gt": 0}})
    if seeded is None:
        update = await asyncio.to_thread(starter_update)
        await publish_updates(runtime, [update])
        log.info("cognition base: %d starter entries published", len(update.docs))


async def periodic_save(memory: Memory, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        async with memory.lock:
            await asyncio.to_thread(memory.vectors.save)


async def recent_events(js: JetStreamContext, after_seq: int, limit: int) -> list[EventLine]:
    """The newest events on the stream after ``after_seq``, at most ``limit``, oldest first (the UI's feed)."""
    first, last, count = await bus.stream_bounds(js)
    if count == 0 or after_seq >= last:
        return []
    start = max(first, after_seq + 1, last - limit + 1)
    return [EventLine.of(m.seq, m.subject, m.data) async for m in bus.read_stream(js, start_seq=start, until_seq=last)]


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, MemorySettings)
    vectors_dir = settings.vectors_dir()
    vectors_dir.mkdir(parents=True, exist_ok=True)
    embedder = CachingEmbedder(embedder_for(settings), vectors_dir / f"embeddings-{settings.embedder}.npz")
    vectors = VectorStore(embedder, vectors_dir)
    memory = Memory(Projector(runtime.db), vectors, replicate_top_k=settings.replicate_top_k)

    async def save_on_exit() -> None:
        async with memory.lock:
            await asyncio.to_thread(vectors.save)

    runtime.exit_stack.push_async_callback(save_on_exit)
    await catch_up(runtime.js, memory, settings.service_name)
    await seed_starter(runtime, memory)
    best = await asyncio.to_thread(ranked_experiments, runtime.db, None, 1)
    memory.best_fitness = float(best[0]["fitness_total"]) if best else None
    # NaN until a fitness exists: the series is there, and no made-up value sits on the dashboard.
    metrics.BEST_FITNESS.labels(settings.service_name).set(memory.best_fitness or math.nan)
    router = APIRouter()
    router.include_router(create_router(MemoryApiDeps(db=runtime.db, vectors=vectors,
                                                      projected_seq=memory.projector.last_seq)))
    router.include_router(admin_router(runtime, memory, settings))
    router.include_router(create_ui_router(runtime.db, partial(recent_events, runtime.js)))
    handler = partial(project, memory)
    return Wiring(handlers={event_type: handler for event_type in DOMAIN_EVENTS}, router=router,
                  tasks=[partial(periodic_save, memory, settings.save_every_s)])


SPEC = ServiceSpec(name="memory", settings_type=MemorySettings, bootstrap=bootstrap)
