"""Engineer's handlers: a proposal or a patch becomes a training attempt, or a rejection."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from shared.bus import Delivery
from shared.events import DebugPatched, Event, ProposalCreated, ProposalRejected, TrainStarted, caused_by
from shared.mixer_source import static_problem

PRODUCER = "engineer"


def attempt_of(event: Event) -> int:
    return event.attempt if isinstance(event, DebugPatched) else 1


async def on_candidate(profile: str, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, (ProposalCreated, DebugPatched))
    problem = static_problem(event.code)
    if problem is not None:
        rejected = ProposalRejected(**caused_by(event, PRODUCER), reason=problem.reason, detail=problem.detail)
        return (rejected,)
    started = TrainStarted(
        **caused_by(event, PRODUCER), attempt=attempt_of(event), worker_host=socket.gethostname(),
        device="cpu", profile=profile,
    )
    return (started,)
