"""Engineer's settings and wiring. Engineers share one durable consumer: each added instance adds capacity."""

from __future__ import annotations

from functools import partial

from services.engineer.handlers import on_candidate
from shared.events import DebugPatched, ProposalCreated
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


class EngineerSettings(ServiceSettings):
    service_name: str = "engineer"
    profile: str = "smoke"


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, EngineerSettings)
    handler = partial(on_candidate, settings.profile)
    return Wiring(handlers={ProposalCreated: handler, DebugPatched: handler})


SPEC = ServiceSpec(name="engineer", settings_type=EngineerSettings, bootstrap=bootstrap)
