"""Engineer's settings and wiring. Engineers share one durable consumer: each added instance adds capacity."""

from __future__ import annotations

import asyncio
import os
from functools import partial
from pathlib import Path

from pydantic import Field

from services.engineer.handlers import Engineer, on_candidate, on_replicate
from shared import metrics
from shared.events import ERROR_KINDS, REJECTION_REASONS, DebugPatched, ProposalCreated, ReplicateRequested
from shared.llm_server import default_llm_threads
from shared.memory_client import MemoryClient
from shared.mixer.sandbox import GIB
from shared.service import Runtime, ServiceSpec, Wiring
from shared.settings import ServiceSettings


def default_train_threads() -> int:
    """What the stack's LLM server leaves free (``default_llm_threads``): on a 2-core box two training threads
    beside a generating LLM run slower than one."""
    return max(1, (os.cpu_count() or 2) - default_llm_threads())


class EngineerSettings(ServiceSettings):
    service_name: str = "engineer"
    # The profile for a candidate that names none (a proposal from before proposals carried their profile).
    profile: str = "smoke"
    train_threads: int = Field(default_factory=default_train_threads, ge=1)
    memory_limit_gib: float = Field(default=8.0, gt=0)
    corpus_dir: Path | None = None
    # Caps for quick runs (tests, demos): 0 keeps the profile's token budget; -1 the profile's benchmark samples.
    max_tokens: int = Field(default=0, ge=0)
    eval_samples: int = Field(default=-1, ge=-1)

    def corpus(self) -> Path:
        return self.corpus_dir or self.data_dir / "corpus"


async def bootstrap(runtime: Runtime) -> Wiring:
    settings = runtime.settings
    assert isinstance(settings, EngineerSettings)
    memory = MemoryClient(settings.memory_url)
    runtime.exit_stack.push_async_callback(memory.aclose)
    engineer = Engineer(
        corpus_dir=settings.corpus(), runs_dir=settings.data_dir / "runs",
        default_profile=settings.profile, threads=settings.train_threads,
        memory_bytes=int(settings.memory_limit_gib * GIB), max_tokens=settings.max_tokens,
        eval_samples=settings.eval_samples, memory=memory, precision_dir=settings.data_dir,
    )
    metrics.init_engineer(settings.service_name, tuple(sorted(ERROR_KINDS)), REJECTION_REASONS)
    candidate = partial(on_candidate, engineer)
    return Wiring(handlers={ProposalCreated: candidate, DebugPatched: candidate,
                            ReplicateRequested: partial(on_replicate, engineer)},
                  # A full disk stops all work here; a profile's missing corpus holds only that profile's (NotReady).
                  ready=partial(asyncio.to_thread, engineer.disk_problem))


SPEC = ServiceSpec(name="engineer", settings_type=EngineerSettings, bootstrap=bootstrap)
