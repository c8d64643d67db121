"""Engineer's handlers: a proposal or a patch becomes a training attempt, or a rejection."""

from __future__ import annotations

import ast
import socket
from collections.abc import Sequence

from shared.bus import Delivery
from shared.events import DebugPatched, Event, ProposalCreated, ProposalRejected, TrainStarted, caused_by

PRODUCER = "engineer"


def static_problem(code: str) -> tuple[str, str] | None:
    """(reason, detail) when the source cannot be a mixer at all; checked before anything runs it."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return "syntax", f"line {exc.lineno}: {exc.msg}"
    if not any(isinstance(node, ast.ClassDef) and node.name == "Mixer" for node in tree.body):
        return "contract", "the file defines no top-level class named Mixer"
    return None


def attempt_of(event: Event) -> int:
    return event.attempt if isinstance(event, DebugPatched) else 1


async def on_candidate(profile: str, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, (ProposalCreated, DebugPatched))
    problem = static_problem(event.code)
    if problem is not None:
        reason, detail = problem
        return (ProposalRejected(**caused_by(event, PRODUCER), reason=reason, detail=detail),)  # type: ignore[arg-type]
    started = TrainStarted(
        **caused_by(event, PRODUCER), attempt=attempt_of(event), worker_host=socket.gethostname(),
        device="cpu", profile=profile,
    )
    return (started,)
