"""Debugger's handler: a failed attempt gets a patch while attempts remain, else the debugger gives up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.debugger.patcher import PatchAttempt
from shared import metrics
from shared.bus import Delivery
from shared.events import DebugGaveUp, Event, LlmUsage, TrainFailed, caused_by

PRODUCER = "debugger"


class Patcher(Protocol):
    """Proposes a minimal patch for a failure (``PatchAttempt.patched`` is ``None`` when it has none to offer)."""

    async def patch(self, failure: TrainFailed) -> PatchAttempt: ...


async def on_train_failed(
    patcher: Patcher | None, max_attempts: int, event: Event, delivery: Delivery
) -> Sequence[Event]:
    assert isinstance(event, TrainFailed)
    usage: LlmUsage | None = None
    if patcher is not None and event.attempt < max_attempts:
        attempt = await patcher.patch(event)
        if attempt.patched is not None:
            metrics.DEBUG_PATCHES.labels(PRODUCER, str(attempt.patched.attempt)).inc()
            return (attempt.patched,)
        usage = attempt.usage
    metrics.DEBUG_GAVE_UP.labels(PRODUCER).inc()
    gave_up = DebugGaveUp(
        **caused_by(event, PRODUCER), attempts=event.attempt, last_error_kind=event.error_kind,
        last_error=event.message, llm=usage,
    )
    return (gave_up,)
