"""``python -m shared.mixer.guard -- ARGV``: runs ARGV and takes its whole process group down with it when the
process that started the guard dies.

Only for a sandbox without namespaces (no bubblewrap, no ``unshare``): there the kernel's parent-death signal
reaches just the direct child, and whatever the candidate started would be left behind. The guard sits between:
it starts ARGV in its own process group, and a thread watches for the guard being orphaned (its parent PID
changes), then kills the group, itself included. Otherwise it waits for ARGV and ends the same way ARGV did
(its exit code, or the same signal), so the sandbox's classification sees ARGV's own end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time


def watch_parent(parent: int, every_s: float = 0.2) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if argv[:1] != ["--"] or len(argv) < 2:
        print("usage: python -m shared.mixer.guard -- ARGV...", file=sys.stderr)
        return 2
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    child = subprocess.Popen(argv[1:])  # inherits our process group, limits and descriptors
    code = child.wait()
    if code < 0:  # end by the same signal, so the parent classifies it as the child's (SIGXCPU, SIGKILL, ...)
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
