"""A sandboxed run's sign of life: the child touches a file each time a module's forward returns (and at each
phase it enters); the parent stops a child whose file stays unchanged longer than its stall limit.

A forward that never returns, a hang in ``__init__`` or a deadlock shows in seconds this way, whatever the
profile's whole-run limit. The file's modification time is the beat; its text names the phase, so the parent can
say where the child stopped (``checks: causality``, ``training``, ``evaluation``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

HEARTBEAT_FILE = "heartbeat"


class Heartbeat:
    """The child's side. ``beat`` is cheap enough to call after every module forward (it writes at most every
    ``every_s``)."""

    def __init__(self, path: Path, every_s: float = 0.5) -> None:
        self.path = path
        self.every_s = every_s
        self.phase = "starting"
        self.path.write_text(self.phase)
        self.last = time.monotonic()

    def beat(self, phase: str | None = None) -> None:
        now = time.monotonic()
        if phase is not None and phase != self.phase:
            self.phase = phase
            self.path.write_text(phase)
            self.last = now
        elif now - self.last >= self.every_s:
            os.utime(self.path)
            self.last = now

    def on_every_forward(self) -> Any:
        """Beat whenever any module's forward returns; returns the hook's handle (``.remove()`` to stop)."""
        from torch.nn.modules.module import register_module_forward_hook

        return register_module_forward_hook(lambda module, inputs, output: self.beat())


def silent_for(path: Path, started_at: float) -> float:
    """Seconds (wall clock) since the last beat, or since ``started_at`` (``time.time()``) before the first."""
    try:
        last = path.stat().st_mtime
    except FileNotFoundError:
        last = started_at
    return time.time() - max(last, started_at)


def last_phase(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or "unknown"
    return "not started"
