"""Finding the processes a test started, by what they are doing rather than by name."""

from __future__ import annotations

import os
from pathlib import Path


def pids_working_in(folder: Path) -> set[int]:
    """Processes whose working directory is ``folder`` or below it (a sandboxed run works in its run folder)."""
    target = folder.resolve()
    found = set()
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if Path(os.readlink(cwd)).is_relative_to(target):
                found.add(int(cwd.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found
