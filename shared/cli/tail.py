"""``asiarch events tail`` and the commands that follow a campaign or an experiment in a log: one readable line
per event, as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.cli.stack import connect_nats
from shared.errors import ConfigError
from shared.event_text import EventLine
from shared.events import (
    BY_SUBJECT,
    SUBJECT_PREFIX,
    AnalysisCreated,
    DebugGaveUp,
    FitnessComputed,
    JudgeScored,
    ProposalRejected,
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


async def follow(nats_url: str, subject: str | None, start_seq: int | None,
                 idle_s: float | None = None) -> AsyncIterator[EventLine | None]:
    """Every event on ``subject`` from stream sequence ``start_seq`` on (None: only those published from now),
    as lines, until the caller stops iterating; with ``idle_s``, None after each ``idle_s`` without an event."""
    nc = await connect_nats(nats_url, "asiarch-tail")
    js = nc.jetstream()
    policy = DeliverPolicy.NEW if start_seq is None else DeliverPolicy.BY_START_SEQUENCE
    sub = await js.subscribe(subject_filter(subject), ordered_consumer=True, deliver_policy=policy,
                             config=ConsumerConfig(opt_start_seq=start_seq))
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s or 1.0)
            except asyncio.TimeoutError:
                if idle_s is not None:
                    yield None
                continue
            yield EventLine.of(msg.metadata.sequence.stream, msg.subject, msg.data)
    finally:
        await sub.unsubscribe()
        await nc.close()


async def tail(
    nats_url: str, subject: str | None, from_start: bool, limit: int | None, emit: Callable[[str], None]
) -> int:
    """Print events until interrupted or ``limit`` were printed. Returns how many were printed."""
    printed = 0
    if limit is not None and limit <= 0:
        return printed
    lines = follow(nats_url, subject, 1 if from_start else None)
    try:
        async for line in lines:
            assert line is not None  # no idle ticks were asked for
            emit(line.line())
            printed += 1
            if limit is not None and printed >= limit:
                break
    finally:
        await lines.aclose()
    return printed


async def follow_until(nats_url: str, start_seq: int, keep: Callable[[EventLine], bool],
                       done: Callable[[EventLine | None], bool], emit: Callable[[str], None]) -> None:
    """Emit the line of every event from ``start_seq`` on that ``keep`` selects, until ``done`` says so: it is
    asked after each selected event, and each second without one (with None)."""
    lines = follow(nats_url, None, start_seq, idle_s=1.0)
    try:
        async for line in lines:
            if line is None:
                if done(None):
                    return
            elif keep(line):
                emit(line.line())
                if done(line):
                    return
    finally:
        await lines.aclose()


class ExperimentOver:
    """Ends when nothing more is coming for one experiment: rejected, given up, or scored: its fitness where the
    profile's fitness reference is measured, else its analysis and judging."""

    def __init__(self, experiment_id: str, expects_fitness: bool) -> None:
        self.experiment_id = experiment_id
        self.final = {ProposalRejected.event_name(), DebugGaveUp.event_name()}
        self.results = {FitnessComputed.event_name()} if expects_fitness else {AnalysisCreated.event_name(),
                                                                                 JudgeScored.event_name()}
        self.seen: set[str] = set()

    def keep(self, line: EventLine) -> bool:
        return line.experiment_id == self.experiment_id

    def __call__(self, line: EventLine | None) -> bool:
        if line is None:
            return False
        self.seen.add(line.name)
        return line.name in self.final or self.results <= self.seen
