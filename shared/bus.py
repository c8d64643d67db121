"""The event bus on NATS JetStream: the stream, publishing, durable pull consumers and the delivery policy.

Delivery policy, written down once:

- publish sets ``Nats-Msg-Id`` to the event id, so the server stores a re-published event once;
- a consumer skips an event its service already finished (the ledger in the store), so a redelivery has no effect;
- a handler's output events carry ids derived from the input event, so a handler re-run after a crash emits
  the same ids and the server drops the repeats: its effect happens once;
- the message is acked only after the outputs are published (acked by the server) and the ledger entry is stored;
- a transient failure naks with backoff; after ``max_deliver`` deliveries (or at once, for bytes that do not decode)
  the message is published to ``asiarch.dlq.<subject>`` as a ``DeadLettered`` event, counted, and terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared import metrics
from shared.errors import NotReady
from shared.events import (
    STREAM_NAME,
    STREAM_SUBJECTS,
    DeadLettered,
    Event,
    EventDecodeError,
    caused_by,
    decode,
    encode,
    new_event_id,
    subject_of,
    utc_now,
)

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"


async def connect(url: str, name: str, connect_timeout_s: float = 5.0, *, keep_trying: bool = False) -> NatsClient:
    """A NATS connection. ``keep_trying``: a long-lived service waits for NATS; a command fails at once."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    return await nats.connect(
        url, name=name, connect_timeout=connect_timeout_s, max_reconnect_attempts=-1 if keep_trying else 2,
        reconnect_time_wait=1, error_cb=on_error,
    )


async def ensure_stream(js: JetStreamContext, duplicate_window_s: float) -> None:
    """Create the ``ASIARCH`` stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=STREAM_NAME, subjects=STREAM_SUBJECTS, storage=StorageType.FILE,
        duplicate_window=duplicate_window_s, max_age=0,
    )
    try:
        await js.stream_info(STREAM_NAME)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def publish(js: JetStreamContext, event: Event, producer: str = "") -> PubAck:
    ack = await js.publish(subject_of(event), encode(event), headers={MSG_ID_HEADER: event.event_id})
    metrics.EVENTS_PUBLISHED.labels(producer or event.producer, type(event).type_tag()).inc()
    return ack


# --- consuming ------------------------------------------------------------------------------------------------------


Emit = Callable[[Event], Awaitable[None]]


async def _no_emit(event: Event) -> None:
    raise RuntimeError("this delivery cannot publish")


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the message that carried its event.

    ``emit`` publishes an event before the handler returns (e.g. ``train.started`` ahead of a long training run).
    Use ids derived from the cause (``caused_by``) so a re-run emits the same ids and the server drops repeats.
    """

    stream_seq: int
    deliveries: int
    subject: str
    emit: Emit = _no_emit


Handler = Callable[[Event, Delivery], Awaitable[Sequence[Event]]]


class Ledger:
    """Remembers which events a service finished, so a redelivery is skipped. Backed by the store."""

    async def seen(self, event_id: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    async def record(self, event_id: str, stream_seq: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def waits(self, event_id: str) -> int:  # pragma: no cover - interface
        """How many deliveries of the event were put back because the service was not ready (NotReady)."""
        raise NotImplementedError

    async def add_wait(self, event_id: str) -> int:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class ConsumerPolicy:
    max_deliver: int = 5
    ack_wait_s: float = 60.0
    retry_backoff_s: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)
    batch: int = 1
    fetch_timeout_s: float = 1.0
    # 0: a generous default; 1: strict stream order (the next message waits until this one is acked or termed).
    max_ack_pending: int = 0

    def backoff(self, deliveries: int) -> float:
        index = min(max(deliveries - 1, 0), len(self.retry_backoff_s) - 1)
        return self.retry_backoff_s[index]


def consumer_config(service: str, subjects: Sequence[str], policy: ConsumerPolicy) -> ConsumerConfig:
    # The server would stop redelivering at its own max_deliver, leaving a message stuck if the process died on
    # the last try; we count deliveries ourselves and dead-letter, so the server's limit stays unbounded.
    return ConsumerConfig(
        durable_name=service, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        filter_subjects=list(subjects), ack_wait=policy.ack_wait_s, max_deliver=-1,
        max_ack_pending=policy.max_ack_pending or max(policy.batch * 8, 64),
    )


async def ensure_consumer(js: JetStreamContext, service: str, subjects: Sequence[str], policy: ConsumerPolicy) -> None:
    """Create the service's durable consumer or update it in place (instances of one service share it)."""
    await js.add_consumer(STREAM_NAME, consumer_config(service, subjects, policy))


@dataclass
class Consumer:
    """One service instance's loop over its durable consumer."""

    js: JetStreamContext
    service: str
    handlers: Mapping[type[Event], Handler]
    ledger: Ledger
    policy: ConsumerPolicy = field(default_factory=ConsumerPolicy)
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    # Why this instance cannot take work now (None: it can); while it cannot, it fetches nothing, so the work
    # stays queued for it or another instance.
    ready: Callable[[], Awaitable[str | None]] | None = None
    # Why work waits now, from ``ready`` or from a handler's NotReady since the last success: for /healthz.
    gate_closed_for: str | None = None
    handler_waits_for: str | None = None

    @property
    def subjects(self) -> list[str]:
        return sorted({event_type.subject() for event_type in self.handlers})

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(self.js, self.service, self.subjects, self.policy)
        metrics.init_consumer(self.service, self.subjects)
        sub = await self.js.pull_subscribe_bind(durable=self.service, stream=STREAM_NAME)
        try:
            while not stop.is_set():
                if not await self.can_take_work(stop):
                    continue
                try:
                    messages = await sub.fetch(self.policy.batch, timeout=self.policy.fetch_timeout_s)
                except NatsTimeoutError:
                    continue
                for msg in messages:
                    await self.process(msg)
        finally:
            await sub.unsubscribe()

    @property
    def waiting_for(self) -> str | None:
        return self.gate_closed_for or self.handler_waits_for

    async def can_take_work(self, stop: asyncio.Event, poll_s: float = 5.0) -> bool:
        reason = await self.ready() if self.ready is not None else None
        if reason != self.gate_closed_for:
            if reason is None:
                log.info("%s: taking work again", self.service)
            else:
                log.warning("%s: not taking work: %s", self.service, reason)
        self.gate_closed_for = reason
        if reason is None:
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
        return False

    async def process(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(stream_seq=meta.sequence.stream, deliveries=meta.num_delivered, subject=msg.subject,
                            emit=self.emit)
        try:
            event = decode(msg.data)
        except EventDecodeError as exc:
            await self.dead_letter(msg, delivery, f"undecodable event: {exc}", event_name="undecodable")
            return
        name = type(event).event_name()
        # Deliveries that only waited for the environment (NotReady) do not count toward max_deliver. A first
        # delivery cannot have waited: the store is asked only for a redelivery, off the common path.
        if delivery.deliveries > 1:
            waited = await self.ledger.waits(event.event_id)
            delivery = dataclasses.replace(delivery, deliveries=delivery.deliveries - waited)
        if delivery.deliveries > self.policy.max_deliver:
            await self.dead_letter(msg, delivery, "delivered more times than max_deliver", event_name=name)
            return
        if await self.ledger.seen(event.event_id):
            metrics.EVENTS_HANDLED.labels(self.service, name, "duplicate").inc()
            await msg.ack_sync()
            return
        await self.handle(msg, event, delivery)

    async def emit(self, event: Event) -> None:
        await publish(self.js, event, self.service)

    async def handle(self, msg: Msg, event: Event, delivery: Delivery) -> None:
        name = type(event).event_name()
        handler = self.handlers[type(event)]
        self.busy.set()
        heartbeat = asyncio.create_task(self.keep_alive(msg))
        started = time.perf_counter()
        try:
            outputs = await handler(event, delivery)
            for output in outputs:
                await self.emit(output)
            await self.ledger.record(event.event_id, delivery.stream_seq)
        except Exception as exc:  # any handler failure goes through the retry/dead-letter policy
            await self.on_failure(msg, event, delivery, exc)
            return
        finally:
            heartbeat.cancel()
            self.busy.clear()
            metrics.HANDLER_SECONDS.labels(self.service, name).observe(time.perf_counter() - started)
        await msg.ack_sync()
        self.handler_waits_for = None
        metrics.EVENTS_HANDLED.labels(self.service, name, "ok").inc()

    async def keep_alive(self, msg: Msg) -> None:
        """Tell the server a long handler is still at work, so it does not redeliver to another instance."""
        while True:
            await asyncio.sleep(self.policy.ack_wait_s / 3)
            await msg.in_progress()

    async def on_failure(self, msg: Msg, event: Event, delivery: Delivery, exc: Exception) -> None:
        name = type(event).event_name()
        if isinstance(exc, NotReady):
            await self.wait_for_operator(msg, event, name, exc)
            return
        detail = "".join(traceback.format_exception(exc))[-4000:]
        if delivery.deliveries >= self.policy.max_deliver:
            log.error("%s: giving up on %s after %d deliveries: %s", self.service, name, delivery.deliveries, exc)
            await self.dead_letter(msg, delivery, detail, event_name=name, cause=event)
            return
        delay = self.policy.backoff(delivery.deliveries)
        log.warning("%s: %s failed (delivery %d), retrying in %.0f s: %s", self.service, name,
                    delivery.deliveries, delay, exc)
        metrics.EVENTS_HANDLED.labels(self.service, name, "retry").inc()
        await msg.nak(delay=delay)

    async def wait_for_operator(self, msg: Msg, event: Event, name: str, exc: NotReady) -> None:
        """Put the message back, uncounted, until the environment is fixed: it is not the event's fault."""
        waited = await self.ledger.add_wait(event.event_id)
        if str(exc) != self.handler_waits_for:
            log.warning("%s: %s waits: %s", self.service, name, exc)
        self.handler_waits_for = str(exc)
        metrics.EVENTS_HANDLED.labels(self.service, name, "waiting").inc()
        await msg.nak(delay=self.policy.backoff(waited))

    async def dead_letter(
        self, msg: Msg, delivery: Delivery, error: str, *, event_name: str, cause: Event | None = None
    ) -> None:
        letter = build_dead_letter(self.service, msg.subject, msg.data, delivery.deliveries, error, cause)
        await publish(self.js, letter, self.service)
        await msg.term()
        metrics.DEAD_LETTERED.labels(self.service, msg.subject).inc()
        metrics.EVENTS_HANDLED.labels(self.service, event_name, "dead_lettered").inc()


def build_dead_letter(
    service: str, subject: str, payload: bytes, deliveries: int, error: str, cause: Event | None
) -> DeadLettered:
    common: dict[str, Any] = {
        "original_subject": subject, "original_payload": payload, "consumer": service,
        "deliveries": deliveries, "error": error,
    }
    if cause is not None:
        return DeadLettered(**caused_by(cause, f"{service}.dlq"), **common)
    # Bytes that never decoded have no envelope to inherit; a fresh id keeps each such letter.
    return DeadLettered(event_id=new_event_id(), occurred_at=utc_now(), producer=service, campaign_id="", **common)


async def consumer_lag(js: JetStreamContext, service: str) -> tuple[int, int]:
    """(pending, ack_pending) of a service's durable consumer; (0, 0) before it exists."""
    try:
        info = await js.consumer_info(STREAM_NAME, service)
    except NotFoundError:
        return 0, 0
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


# --- reading the stream ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes


async def stream_bounds(js: JetStreamContext) -> tuple[int, int, int]:
    """(first seq, last seq, message count) of the stream."""
    state = (await js.stream_info(STREAM_NAME)).state
    return int(state.first_seq), int(state.last_seq), int(state.messages)


async def read_stream(
    js: JetStreamContext, *, start_seq: int = 1, until_seq: int | None = None, idle_timeout_s: float = 5.0
) -> AsyncIterator[StoredMessage]:
    """Every stored message from ``start_seq`` to ``until_seq`` (default: the last one now), in order."""
    _, last, count = await stream_bounds(js)
    end = last if until_seq is None else min(until_seq, last)
    if count == 0 or start_seq > end:
        return
    sub = await js.subscribe(
        STREAM_SUBJECTS[0], ordered_consumer=True, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=start_seq),
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=idle_timeout_s)
            seq = msg.metadata.sequence.stream
            yield StoredMessage(seq=seq, subject=msg.subject, data=msg.data)
            if seq >= end:
                return
    finally:
        await sub.unsubscribe()
