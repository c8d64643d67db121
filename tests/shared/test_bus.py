"""The bus against a real nats-server with JetStream and a real store."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pymongo.database import Database

from shared import bus, metrics
from shared.errors import NotReady
from shared.events import (
    DeadLettered,
    Event,
    ProposalCreated,
    TrainStarted,
    caused_by,
    decode,
    encode,
    subject_of,
)
from shared.store import MongoLedger, mongo_client
from tests.shared.samples import SAMPLES, envelope

FAST = bus.ConsumerPolicy(max_deliver=3, ack_wait_s=5.0, retry_backoff_s=(0.05,), fetch_timeout_s=0.2)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc: NatsClient = await bus.connect(nats_url, "test")
    context = nc.jetstream()
    await bus.ensure_stream(context, duplicate_window_s=600)
    yield context
    await nc.close()


@pytest.fixture
def db(mongo_uri: str) -> Database:
    return mongo_client(mongo_uri)["asiarch_test"]


async def stored(js: JetStreamContext) -> list[bus.StoredMessage]:
    return [message async for message in bus.read_stream(js)]


def proposal(n: int) -> ProposalCreated:
    return ProposalCreated(**envelope(1000 + n, f"exp-{n}"), name=f"m{n}", motivation="m", code="class Mixer: ...",
                           profile="smoke")


def started_for(event: Event) -> TrainStarted:
    return TrainStarted(**caused_by(event, "engineer"), attempt=1, worker_host="h", device="cpu")


@contextlib.asynccontextmanager
async def consuming(consumers: Sequence[bus.Consumer]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(consumer.run(stop)) for consumer in consumers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def wait_for(condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_every_event_round_trips_bit_identically(js: JetStreamContext) -> None:
    for sample in SAMPLES:
        await bus.publish(js, sample)
    messages = await stored(js)
    assert [m.data for m in messages] == [encode(s) for s in SAMPLES]
    assert [m.subject for m in messages] == [subject_of(s) for s in SAMPLES]
    assert [decode(m.data) for m in messages] == SAMPLES


async def test_republished_event_is_stored_once(js: JetStreamContext) -> None:
    first = await bus.publish(js, SAMPLES[1])
    again = await bus.publish(js, SAMPLES[1])
    assert again.duplicate and again.seq == first.seq
    assert (await bus.stream_bounds(js))[2] == 1


class FailingOnce(MongoLedger):
    """The process 'dies' after publishing its outputs and before recording the event: the worst moment."""

    failed = False

    async def record(self, event_id: str, stream_seq: int) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("store went away")
        await super().record(event_id, stream_seq)


async def test_handler_crash_midway_has_one_effect(js: JetStreamContext, db: Database) -> None:
    calls: Counter[str] = Counter()

    async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
        calls[event.event_id] += 1
        db.effects.update_one({"_id": event.event_id}, {"$set": {"seq": delivery.stream_seq}}, upsert=True)
        if calls[event.event_id] == 1:
            raise RuntimeError("crash after the side effect")
        return (started_for(event),)

    consumer = bus.Consumer(js, "engineer", {ProposalCreated: handler}, FailingOnce(db, "engineer"), FAST)
    event = proposal(1)
    async with consuming([consumer]):
        await bus.publish(js, event)
        await wait_for(lambda: db.processed.count_documents({}) == 1)
    assert calls[event.event_id] == 3  # crash in the handler, crash before the ledger, success
    outputs = [decode(m.data) for m in await stored(js) if m.subject == TrainStarted.subject()]
    assert outputs == [started_for(event).__replace__(occurred_at=outputs[0].occurred_at)]
    assert db.effects.count_documents({}) == 1


async def test_poison_event_is_dead_lettered_after_max_deliver(js: JetStreamContext, db: Database) -> None:
    async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
        raise ValueError("this event always breaks the handler")

    counter = metrics.DEAD_LETTERED.labels("debugger", ProposalCreated.subject())
    before = counter._value.get()
    consumer = bus.Consumer(js, "debugger", {ProposalCreated: handler}, MongoLedger(db, "debugger"), FAST)
    async with consuming([consumer]):
        await bus.publish(js, proposal(2))
        await wait_for(lambda: counter._value.get() == before + 1)
    letters = [decode(m.data) for m in await stored(js) if m.subject == "asiarch.dlq.proposal.created"]
    assert len(letters) == 1
    letter = letters[0]
    assert isinstance(letter, DeadLettered)
    assert letter.deliveries == FAST.max_deliver and "always breaks" in letter.error
    assert decode(letter.original_payload) == proposal(2)


async def test_work_that_waits_for_the_environment_is_never_dead_lettered(js: JetStreamContext, db: Database) -> None:
    """A handler that is NotReady more often than max_deliver allows, then ready: the event is handled once, even
    across a restart of the consumer (the waits are counted in the store, not in memory)."""
    waits = FAST.max_deliver + 2
    handled: list[int] = []

    async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
        if len(handled) < waits:
            handled.append(delivery.deliveries)
            raise NotReady("no prepared corpus; run: asiarch data prepare")
        handled.append(-1)
        return ()

    def consumer() -> bus.Consumer:
        return bus.Consumer(js, "engineer", {ProposalCreated: handler}, MongoLedger(db, "engineer"), FAST)

    first = consumer()
    async with consuming([first]):
        await bus.publish(js, proposal(5))
        await wait_for(lambda: len(handled) >= 3)
        assert first.waiting_for is not None and "data prepare" in first.waiting_for
    async with consuming([consumer()]):  # a restarted instance
        await wait_for(lambda: handled[-1:] == [-1], timeout_s=30)
    assert set(handled[:-1]) == {1} and not [m for m in await stored(js) if m.subject.startswith("asiarch.dlq.")]


async def test_malformed_bytes_are_dead_lettered_with_the_decode_error(js: JetStreamContext, db: Database) -> None:
    async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
        return ()

    consumer = bus.Consumer(js, "engineer", {ProposalCreated: handler}, MongoLedger(db, "engineer"), FAST)
    async with consuming([consumer]):
        await js.publish(ProposalCreated.subject(), b'{"type": "proposal.created.v1", "name": 1}')
        await wait_for(lambda: metrics.DEAD_LETTERED.labels("engineer", ProposalCreated.subject())._value.get() >= 1)
    letters = [decode(m.data) for m in await stored(js) if m.subject.startswith("asiarch.dlq.")]
    assert len(letters) == 1 and isinstance(letters[0], DeadLettered)
    assert letters[0].deliveries == 1 and "undecodable" in letters[0].error


async def test_two_instances_share_the_durable_consumer_as_a_work_queue(js: JetStreamContext, db: Database) -> None:
    handled: list[tuple[str, str]] = []

    def handler_for(instance: str):  # type: ignore[no-untyped-def]
        async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
            await asyncio.sleep(0.01)
            handled.append((instance, event.event_id))
            return ()
        return handler

    consumers = [
        bus.Consumer(js, "engineer", {ProposalCreated: handler_for(name)}, MongoLedger(db, "engineer"), FAST)
        for name in ("a", "b")
    ]
    async with consuming(consumers):
        for n in range(100):
            await bus.publish(js, proposal(n))
        await wait_for(lambda: len(handled) >= 100)
        await asyncio.sleep(0.3)  # a duplicate would show up now
    ids = [event_id for _, event_id in handled]
    assert len(ids) == len(set(ids)) == 100
    per_instance = Counter(instance for instance, _ in handled)
    assert per_instance["a"] > 10 and per_instance["b"] > 10, per_instance


async def test_strict_order_consumer_keeps_stream_order_across_a_retry(js: JetStreamContext, db: Database) -> None:
    handled: list[str] = []
    failed_once: set[str] = set()

    async def handler(event: Event, delivery: bus.Delivery) -> Sequence[Event]:
        if event.experiment_id == "exp-0" and event.event_id not in failed_once:
            failed_once.add(event.event_id)
            raise ConnectionError("transient")
        handled.append(event.experiment_id)
        return ()

    ordered = bus.ConsumerPolicy(max_deliver=3, ack_wait_s=5.0, retry_backoff_s=(0.3,), fetch_timeout_s=0.2,
                                 max_ack_pending=1)
    consumer = bus.Consumer(js, "memory", {ProposalCreated: handler}, MongoLedger(db, "memory"), ordered)
    async with consuming([consumer]):
        for n in range(3):
            await bus.publish(js, proposal(n))
        await wait_for(lambda: len(handled) == 3)
    assert handled == ["exp-0", "exp-1", "exp-2"]
