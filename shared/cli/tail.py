"""``asiarch events tail``: one readable line per event, as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import singledispatch

from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import bus
from shared.cli.stack import connect_nats
from shared.errors import ConfigError
from shared.events import (
    BY_SUBJECT,
    SUBJECT_PREFIX,
    AnalysisCreated,
    CampaignStarted,
    CampaignStopped,
    DeadLettered,
    DebugGaveUp,
    DebugPatched,
    Event,
    EventDecodeError,
    FitnessComputed,
    JudgeScored,
    ProposalCreated,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    decode,
)


def subject_filter(subject: str | None) -> str:
    """``proposal.created`` or ``asiarch.proposal.created`` or a wildcard like ``train.*`` → a stream subject."""
    if not subject:
        return f"{SUBJECT_PREFIX}.>"
    full = subject if subject.startswith(f"{SUBJECT_PREFIX}.") else f"{SUBJECT_PREFIX}.{subject}"
    if "*" not in full and ">" not in full and full not in BY_SUBJECT and not full.startswith(f"{SUBJECT_PREFIX}.dlq"):
        known = ", ".join(sorted(s.removeprefix(f"{SUBJECT_PREFIX}.") for s in BY_SUBJECT))
        raise ConfigError(f"unknown subject '{subject}'; known: {known} (wildcards * and > work too)")
    return full


@singledispatch
def describe(event: Event) -> str:
    return ""


@describe.register
def _(event: CampaignStarted) -> str:
    return f"profile={event.profile} budget={event.budget.experiments} model={event.llm_model}"


@describe.register
def _(event: CampaignStopped) -> str:
    return event.reason


@describe.register
def _(event: ProposalCreated) -> str:
    return f"{event.name!r} parents={','.join(event.parent_ids) or '-'}"


@describe.register
def _(event: ProposalRejected) -> str:
    return f"{event.reason}: {event.detail[:80]}"


@describe.register
def _(event: TrainStarted) -> str:
    return f"attempt {event.attempt} on {event.worker_host}/{event.device}"


@describe.register
def _(event: TrainSucceeded) -> str:
    return f"val_loss={event.val_loss:.4f} params={event.params:,} {event.tokens_per_s:,.0f} tok/s"


@describe.register
def _(event: TrainFailed) -> str:
    return f"attempt {event.attempt} {event.error_kind}: {event.message[:80]}"


@describe.register
def _(event: DebugPatched) -> str:
    return f"attempt {event.attempt}: {event.diagnosis[:80]}"


@describe.register
def _(event: DebugGaveUp) -> str:
    return f"after {event.attempts} attempts ({event.last_error_kind})"


@describe.register
def _(event: AnalysisCreated) -> str:
    return f"gallery={event.gallery_path}"


@describe.register
def _(event: JudgeScored) -> str:
    return f"perf={event.performance} innov={event.innovation} cplx={event.complexity} w={event.weighted:.2f}"


@describe.register
def _(event: FitnessComputed) -> str:
    return f"total={event.total:.3f}"


@describe.register
def _(event: ReplicateRequested) -> str:
    return f"seed {event.seed}: {event.reason}"


@describe.register
def _(event: ReplicateTrained) -> str:
    if not event.succeeded:
        return f"seed {event.seed} {event.error_kind}: {event.message[:80]}"
    return f"seed {event.seed} val_loss={event.val_loss:.4f}" if event.val_loss is not None else f"seed {event.seed}"


@describe.register
def _(event: DeadLettered) -> str:
    return f"from {event.consumer} after {event.deliveries}: {event.error.splitlines()[-1][:80] if event.error else ''}"


def format_line(message: bus.StoredMessage) -> str:
    try:
        event = decode(message.data)
    except EventDecodeError as exc:
        return f"{message.seq:>7}  {'?':<8}  {message.subject:<28}  undecodable: {exc}"
    when = event.occurred_at.strftime("%H:%M:%S")
    experiment = event.experiment_id[:12] or "-"
    return f"{message.seq:>7}  {when:<8}  {type(event).event_name():<20}  {experiment:<12}  {describe(event)}"


async def tail(
    nats_url: str, subject: str | None, from_start: bool, limit: int | None, emit: Callable[[str], None]
) -> int:
    """Print events until interrupted or ``limit`` were printed. Returns how many were printed."""
    nc = await connect_nats(nats_url, "asiarch-tail")
    js = nc.jetstream()
    policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
    sub = await js.subscribe(subject_filter(subject), ordered_consumer=True, deliver_policy=policy,
                             config=ConsumerConfig())
    printed = 0
    try:
        while limit is None or printed < limit:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except asyncio.TimeoutError:
                continue
            emit(format_line(bus.StoredMessage(msg.metadata.sequence.stream, msg.subject, msg.data)))
            printed += 1
    finally:
        await sub.unsubscribe()
        await nc.close()
    return printed
