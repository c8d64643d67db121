"""Analyst's settings and wiring."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from services.analyst.handlers import on_train_succeeded
from shared.events import TrainSucceeded
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


class AnalystSettings(ServiceSettings):
    service_name: str = "analyst"
    gallery_dir: Path | None = None

    def gallery(self) -> Path:
        return self.gallery_dir or self.data_dir / "gallery"


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, AnalystSettings)
    return Wiring(handlers={TrainSucceeded: partial(on_train_succeeded, settings.gallery())})


SPEC = ServiceSpec(name="analyst", settings_type=AnalystSettings, bootstrap=bootstrap)
