"""Agent tasks' conversations with the LLM, kept in the log beside the events the tasks produced.

An agent's task runs inside ``shared.llm.recording``; its exchanges become one ``trajectory.recorded`` event next
to the task's own event (the one that carries the task's LLM usage: a proposal, a rejection, a patch, a give-up,
an analysis, a judgement), with what was done with them (that event's tag, and its reason where it has one).
``asiarch trajectories export`` reads them back as JSONL chat transcripts, one line per request and its reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from shared.bus import Delivery
from shared.events import (
    ChatMessage,
    ChatTurn,
    DebugGaveUp,
    Event,
    LlmUsage,
    ProposalRejected,
    TrajectoryRecorded,
    caused_by,
)
from shared.llm import Exchange, Message, recording

# A JetStream message holds at most 1 MiB by default: turns past this many bytes of text are left out.
MAX_TEXT_BYTES = 700_000

Handler = Callable[[Event, Delivery], Awaitable[Sequence[Event]]]


def turns_of(exchanges: Sequence[Exchange], limit: int = MAX_TEXT_BYTES) -> tuple[tuple[ChatTurn, ...], bool]:
    """The exchanges as turns that keep only what each request adds to the conversation before it; and whether
    turns were left out to stay under ``limit`` bytes."""
    turns: list[ChatTurn] = []
    before: list[Message] = []
    size = 0
    for exchange in exchanges:
        messages = list(exchange.messages)
        shared = common_prefix(before, messages)
        new = tuple(ChatMessage(role=m["role"], content=m["content"]) for m in messages[shared:])
        size += len(exchange.reply.encode()) + sum(len(m.content.encode()) for m in new)
        if size > limit:
            return tuple(turns), True
        turns.append(ChatTurn(shared=shared, messages=new, reply=exchange.reply, json=exchange.json))
        before = [*messages, {"role": "assistant", "content": exchange.reply}]
    return tuple(turns), False


def common_prefix(before: list[Message], messages: list[Message]) -> int:
    shared = 0
    for old, new in zip(before, messages, strict=False):
        if old != new:
            break
        shared += 1
    return shared


def transcripts(turns: Iterable[ChatTurn]) -> list[tuple[list[Message], str, bool]]:
    """Each request whole, with its reply and whether it was asked for JSON (the inverse of ``turns_of``)."""
    found: list[tuple[list[Message], str, bool]] = []
    before: list[Message] = []
    for turn in turns:
        messages = [*before[:turn.shared], *({"role": m.role, "content": m.content} for m in turn.messages)]
        found.append((messages, turn.reply, turn.json))
        before = [*messages, {"role": "assistant", "content": turn.reply}]
    return found


def task_event(outputs: Sequence[Event]) -> tuple[Event, LlmUsage] | None:
    """The event a task's conversation belongs beside, the output that carries the task's LLM usage; with it."""
    return next(((e, usage) for e in outputs if isinstance(usage := getattr(e, "llm", None), LlmUsage)), None)


def outcome_detail(event: Event) -> str:
    if isinstance(event, ProposalRejected):
        return event.reason
    if isinstance(event, DebugGaveUp):
        return event.last_error_kind
    return ""


def trajectory(agent: str, outputs: Sequence[Event], exchanges: Sequence[Exchange]) -> list[TrajectoryRecorded]:
    """The ``trajectory.recorded`` of a task that produced ``outputs`` after ``exchanges`` (none without either).
    Its id derives from the task's event, so a task redone after a crash is recorded once."""
    found = task_event(outputs)
    if found is None or not exchanges:
        return []
    of, usage = found
    turns, truncated = turns_of(exchanges)
    envelope = {**caused_by(of, "trajectory"), "producer": agent}
    return [TrajectoryRecorded(**envelope, agent=agent, of_event=of.event_id,  # type: ignore[arg-type]
                               outcome=type(of).type_tag(), detail=outcome_detail(of), model=usage.model,
                               turns=turns, truncated=truncated)]


def recorded(agent: str, handler: Handler) -> Handler:
    """``handler`` with its task's conversation published beside its events."""

    async def handle(event: Event, delivery: Delivery) -> Sequence[Event]:
        with recording() as exchanges:
            outputs = await handler(event, delivery)
        return [*outputs, *trajectory(agent, outputs, exchanges)]

    return handle


def jsonl_rows(event: TrajectoryRecorded) -> Iterable[dict[str, Any]]:
    """One export row per request: the whole conversation up to it and the reply, with where it came from."""
    for number, (messages, reply, as_json) in enumerate(transcripts(event.turns), start=1):
        yield {"agent": event.agent, "campaign_id": event.campaign_id, "experiment_id": event.experiment_id,
               "event_id": event.of_event, "outcome": event.outcome, "detail": event.detail, "model": event.model,
               "turn": number, "json": as_json, "truncated": event.truncated,
               "messages": [*messages, {"role": "assistant", "content": reply}]}


def export_rows(events: Iterable[Event], campaign_id: str | None = None,
                agent: str | None = None) -> Iterator[dict[str, Any]]:
    """The export rows of every recorded task among ``events``, of one campaign or agent if named."""
    for event in events:
        if not isinstance(event, TrajectoryRecorded):
            continue
        if campaign_id in (None, event.campaign_id) and agent in (None, event.agent):
            yield from jsonl_rows(event)
