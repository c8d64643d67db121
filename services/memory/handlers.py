"""Memory's handler and its replays: every event goes through the MongoDB and FAISS projections.

One writer per projection: the consumer's handler and a replay take the same lock. The consumer runs with one
message in flight (``max_ack_pending=1``) because the projections apply events strictly in stream order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.memory.fitness import fitness_event
from services.memory.projection import Projector
from services.memory.replicates import DEFAULT_TOP_K, replicate_request
from services.memory.vectors import VectorStore
from shared import bus, metrics
from shared.bus import Delivery
from shared.events import DeadLettered, Event, FitnessComputed, JudgeScored, TrainSucceeded, decode

log = logging.getLogger(__name__)
REPLAY_BATCH = 500


@dataclass
class Memory:
    projector: Projector
    vectors: VectorStore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    best_fitness: float | None = None
    # A run entering its profile's top k on one seed is trained on another before it is drawn as a parent (0: off).
    replicate_top_k: int = DEFAULT_TOP_K

    async def projected(self, seq: int, timeout_s: float, poll_s: float = 0.1) -> None:
        """Return once the store projection has applied ``seq``; TimeoutError if it has not within ``timeout_s``."""
        async def reached() -> None:
            while self.projector.last_seq() < seq:
                await asyncio.sleep(poll_s)

        await asyncio.wait_for(reached(), timeout_s)

    def apply(self, event: Event, seq: int) -> Event | None:
        """Project one event; the event it makes due, if any (published by the caller): a fitness once a run has
        both its training and its judgement, a replicate once its fitness puts it in the top k."""
        self.projector.apply(event, seq)
        self.vectors.apply(event, seq)
        if isinstance(event, FitnessComputed):
            self.best_fitness = max(self.best_fitness or event.total, event.total)
            metrics.BEST_FITNESS.labels("memory").set(self.best_fitness)
            return replicate_request(self.projector.db, event, self.replicate_top_k)
        if isinstance(event, (TrainSucceeded, JudgeScored)):
            return fitness_event(self.projector.db, event)
        return None


async def project(memory: Memory, event: Event, delivery: Delivery) -> Sequence[Event]:
    async with memory.lock:
        owed = await asyncio.to_thread(memory.apply, event, delivery.stream_seq)
    return (owed,) if owed is not None else ()


async def stored_events(js: JetStreamContext, start_seq: int, until_seq: int | None) -> list[tuple[int, Event]]:
    """Decoded domain events of a stretch of the stream (dead letters are not projected)."""
    pairs: list[tuple[int, Event]] = []
    async for message in bus.read_stream(js, start_seq=start_seq, until_seq=until_seq):
        event = decode(message.data)
        if not isinstance(event, DeadLettered):
            pairs.append((message.seq, event))
    return pairs


async def catch_up(js: JetStreamContext, memory: Memory, consumer: str) -> int:
    """Bring the projections up to the consumer's ack floor (what the durable consumer will not deliver again),
    and the indexes at least up to the store.

    The FAISS files are saved on a timer, so after a crash they can lag the store; after a restore into a new data
    dir they are missing altogether while the store (and the ledger that makes the consumer skip what it handled)
    came back. The missing stretch is read from the stream directly. Fitness events are not re-published: they
    are already in the log (so are replicate requests).
    """
    try:
        info = await js.consumer_info(bus.STREAM_NAME, consumer)
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    except NotFoundError:  # no consumer yet: nothing was acked on this stream
        floor = 0
    floor = max(floor, memory.projector.last_seq())
    start = min(memory.projector.last_seq(), memory.vectors.last_seq()) + 1
    if floor < start:
        return 0
    pairs = await stored_events(js, start, floor)
    async with memory.lock:
        await asyncio.to_thread(apply_pairs, memory, pairs)
    log.info("caught up %d events (seq %d..%d)", len(pairs), start, floor)
    return len(pairs)


def apply_pairs(memory: Memory, pairs: list[tuple[int, Event]], progress: Callable[[int], None] | None = None,
                *, fresh: bool = False) -> int:
    """Replay path: batched writes to the store, one embedding batch per chunk, vectors saved at the end.
    ``fresh``: the projections were just dropped (see ``Projector.apply_all``)."""
    applied = 0
    with memory.projector.batched(REPLAY_BATCH, fresh=fresh):
        for start in range(0, len(pairs), REPLAY_BATCH):
            chunk = pairs[start:start + REPLAY_BATCH]
            applied += memory.projector.apply_all(chunk)
            for seq, event in chunk:
                memory.vectors.apply(event, seq)
            memory.vectors.flush()
            if progress is not None:
                progress(start + len(chunk))
    if memory.vectors.directory is not None:
        memory.vectors.save()
    return applied


@dataclass
class ReplayJob:
    """A replay in progress, as the API reports it."""

    target: str
    until_seq: int | None
    total: int = 0
    done: int = 0
    state: str = "running"  # running, finished, failed
    error: str = ""


async def replay(js: JetStreamContext, memory: Memory, job: ReplayJob) -> None:
    """Drop ``memory``'s projections and rebuild them from sequence 1 (to ``job.until_seq``)."""
    try:
        pairs = await stored_events(js, 1, job.until_seq)
        job.total = len(pairs)
        async with memory.lock:
            await asyncio.to_thread(memory.projector.drop)
            memory.vectors.drop()
            await asyncio.to_thread(apply_pairs, memory, pairs, lambda n: setattr(job, "done", n), fresh=True)
        job.state = "finished"
    except Exception as exc:  # reported through the API, never lost
        log.exception("replay into %s failed", job.target)
        job.state, job.error = "failed", str(exc)
