"""Memory's settings and wiring."""

from __future__ import annotations

import functools

from services.memory.handlers import EventLogProjection, project
from shared.events import DOMAIN_EVENTS
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


class MemorySettings(ServiceSettings):
    service_name: str = "memory"


async def bootstrap(runtime: Runtime) -> Wiring:
    projection = EventLogProjection(runtime.db)
    handler = functools.partial(project, projection)
    return Wiring(handlers={event_type: handler for event_type in DOMAIN_EVENTS})


SPEC = ServiceSpec(name="memory", settings_type=MemorySettings, bootstrap=bootstrap)
