"""Debugger's settings and wiring."""

from __future__ import annotations

import logging
from functools import partial

from pydantic import Field

from services.debugger.handlers import Patcher, on_train_failed
from shared.events import TrainFailed
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class DebuggerSettings(ServiceSettings):
    service_name: str = "debugger"
    max_attempts: int = Field(default=3, ge=1)


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, DebuggerSettings)
    patcher: Patcher | None = None
    log.warning("no LLM patcher configured: every failure is given up at once")
    return Wiring(handlers={TrainFailed: partial(on_train_failed, patcher, settings.max_attempts)})


SPEC = ServiceSpec(name="debugger", settings_type=DebuggerSettings, bootstrap=bootstrap)
