"""``asiarch up|down|status``: the embedded stack seen from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from nats.aio.client import Client as NatsClient
from pydantic import Field

from shared import bus
from shared.embedded import port_in_use, signal_group, spawn
from shared.errors import AsiarchError, ConfigError
from shared.llm_server import (
    LlmServerSettings,
    server_stats,
    server_url,
    set_served_model,
    stack_runs_server,
    wait_until_serving,
)
from shared.observability import prometheus_binary
from shared.settings import DEFAULT_HTTP_PORTS, SERVICE_NAMES, CommonSettings, ui_url
from shared.supervisor import STATE_FILE, ChildState, StackState, pid_alive


class StackError(AsiarchError):
    code = "stack"


class StackSettings(CommonSettings):
    nats_port: int = Field(default=4222, ge=1, le=65535)
    mongo_port: int = Field(default=27017, ge=1, le=65535)
    http_ports: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_HTTP_PORTS))
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    llm_port: int = Field(default=9107, ge=1, le=65535)
    memory_url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORTS['memory']}"
    # Set only when a real MongoDB should be used instead of the embedded store.
    external_mongo_uri: str | None = Field(default=None, validation_alias="ASIARCH_MONGO_URI")


def check_writable(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data dir {data_dir} is not writable: {exc.strerror or exc}") from exc
    return data_dir.resolve()


def check_ports_free(settings: StackSettings, with_prometheus: bool) -> None:
    wanted = {"nats (ASIARCH_NATS_PORT)": settings.nats_port}
    if with_prometheus:
        wanted["prometheus (ASIARCH_PROMETHEUS_PORT)"] = settings.prometheus_port
    if stack_runs_server(LlmServerSettings()):
        wanted["llm (ASIARCH_LLM_PORT)"] = settings.llm_port
    if settings.external_mongo_uri is None:
        wanted["store (ASIARCH_MONGO_PORT)"] = settings.mongo_port
    wanted.update({f"{name} (ASIARCH_HTTP_PORTS)": settings.http_ports[name] for name in SERVICE_NAMES})
    busy = [f"{port} for {what}" for what, port in wanted.items() if port_in_use(port)]
    if busy:
        raise ConfigError("port in use: " + ", ".join(busy) + "; stop what holds it or choose another port")


def running_state(data_dir: Path) -> StackState | None:
    """The state of a live stack in ``data_dir``; a stale state file (supervisor gone) is removed."""
    state = StackState.read(data_dir)
    if state is None:
        return None
    if not pid_alive(state.supervisor_pid):
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        return None
    return state


@dataclass(frozen=True)
class Endpoints:
    """Where a command finds the stack: the embedded one's ports, or the settings' (compose, or by hand)."""

    nats_url: str
    mongo_uri: str
    database: str
    memory_url: str
    data_dir: Path


class StackUnreachable(AsiarchError):
    code = "stack_unreachable"


async def connect_nats(nats_url: str, name: str = "asiarch-cli") -> NatsClient:
    try:
        return await bus.connect(nats_url, name, connect_timeout_s=3)
    except Exception as exc:  # nats raises several unrelated types for "nobody there"
        raise StackUnreachable(f"NATS at {nats_url} does not answer: start the stack (`asiarch up`) ({exc})") from exc


def endpoints(data_dir: Path) -> Endpoints:
    settings = StackSettings()
    state = running_state(data_dir)
    if state is not None:
        return Endpoints(state.nats_url, state.mongo_uri, settings.mongo_db,
                         f"http://127.0.0.1:{state.services['memory'].port}", Path(state.data_dir))
    return Endpoints(settings.nats_url, settings.mongo_uri, settings.mongo_db, settings.memory_url, data_dir)


# --- up ---------------------------------------------------------------------------------------------------------------


def launch(settings: StackSettings, data_dir: Path, with_prometheus: bool = False) -> subprocess.Popen[bytes]:
    missing = [name for name in SERVICE_NAMES if name not in settings.http_ports]
    if missing:
        raise ConfigError(f"ASIARCH_HTTP_PORTS has no port for {', '.join(missing)}")
    if with_prometheus and prometheus_binary() is None:
        raise ConfigError("--with-prometheus: prometheus is not installed (Debian: apt-get install "
                          "--no-install-recommends prometheus)")
    check_ports_free(settings, with_prometheus)
    config = {
        "data_dir": str(data_dir), "nats_port": settings.nats_port, "store_port": settings.mongo_port,
        "http_ports": settings.http_ports, "mongo_uri": settings.external_mongo_uri,
        "prometheus_port": settings.prometheus_port if with_prometheus else 0, "llm_port": settings.llm_port,
    }
    argv = [sys.executable, "-m", "shared.supervisor", json.dumps(config)]
    return spawn("supervisor", argv, data_dir / "logs" / "supervisor.log")


def health(port: int, timeout_s: float = 1.0) -> tuple[bool, str]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    body = response.json()
    detail = str(body.get("status", response.status_code))
    if body.get("waiting_for"):  # up, but its work waits for an operator's fix
        detail += f": {body['waiting_for']}"
    return response.status_code == 200, detail


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until_healthy(proc: subprocess.Popen[bytes], data_dir: Path, timeout_s: float, on_progress) -> StackState:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"the stack failed to start:\n{log_tail(data_dir / 'logs' / 'supervisor.log')}")
        state = StackState.read(data_dir)
        if state is not None and state.status == "running":
            ready = {name: health(child.port)[0] for name, child in state.services.items()}
            on_progress(ready)
            if all(ready.values()):
                return state
        time.sleep(0.25)
    raise StackError(f"not all services were healthy after {timeout_s:.0f} s; see {data_dir / 'logs'}")


def serve_model(state: StackState, model: str, timeout_s: float = 180.0) -> bool:
    """Have the stack's LLM server serve ``model`` (a campaign names its own): restarted on it when it serves
    another. True when it had to switch. A stack without its own server (an endpoint, a model per agent) is left
    as it is: the agents switch by themselves."""
    server = state.servers.get("llm")
    if server is None:
        return False
    url = server_url(server.port)
    stats = server_stats(url)
    if stats is not None and stats.model == model:
        return False
    set_served_model(Path(state.data_dir), model)
    if pid_alive(server.pid):
        signal_group(server.pid, signal.SIGTERM)  # the supervisor restarts it on the model just written
    wait_until_serving(url, model, timeout_s)
    return True


# --- down -------------------------------------------------------------------------------------------------------------


def stop_stack(state: StackState, timeout_s: float = 60.0) -> list[int]:
    """SIGTERM the supervisor and wait; kill by PID whatever is left. Returns the PIDs that had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in state.all_pids()):
        time.sleep(0.1)
    killed = [pid for pid in state.all_pids() if pid_alive(pid)]
    for pid in killed:
        signal_group(pid, signal.SIGKILL)
    (Path(state.data_dir) / STATE_FILE).unlink(missing_ok=True)
    return killed


# --- status -----------------------------------------------------------------------------------------------------------


@dataclass
class ConsumerStatus:
    pending: int
    ack_pending: int
    delivered: int


@dataclass
class StackStatus:
    components: dict[str, tuple[bool, str]]
    stream_messages: int
    consumers: dict[str, ConsumerStatus]
    prometheus_url: str | None = None
    ui_url: str | None = None

    @property
    def healthy(self) -> bool:
        return all(ok for ok, _ in self.components.values())


async def read_bus_status(nats_url: str) -> tuple[int, dict[str, ConsumerStatus]]:
    nc = await bus.connect(nats_url, "asiarch-status", connect_timeout_s=2)
    try:
        js = nc.jetstream()
        _, _, messages = await bus.stream_bounds(js)
        consumers = {}
        for info in await js.consumers_info(bus.STREAM_NAME):
            consumers[info.name] = ConsumerStatus(
                pending=int(info.num_pending or 0), ack_pending=int(info.num_ack_pending or 0),
                delivered=int(info.delivered.stream_seq if info.delivered else 0),
            )
        return messages, consumers
    finally:
        await nc.close()


def llm_status(server: ChildState) -> tuple[bool, str]:
    """The LLM server's model and measured token rates, or why it is down."""
    stats = server_stats(server_url(server.port)) if pid_alive(server.pid) else None
    if stats is None:
        return False, server.problem or f"not serving (restarts {server.restarts}; see logs/llm.log)"
    return True, (f"{stats.model}, prompt {stats.prompt_tokens_per_s:.0f} tok/s, generation "
                  f"{stats.completion_tokens_per_s:.1f} tok/s, {stats.prompt_tokens + stats.completion_tokens} "
                  f"tokens so far, pid {server.pid}, port {server.port}, restarts {server.restarts}")


def wait_for_llm(data_dir: Path, timeout_s: float) -> tuple[bool, str]:
    """The LLM server's status once it serves, or when it cannot start (a model not pulled), or at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = StackState.read(data_dir)
        server = state.servers.get("llm") if state else None
        if server is None:
            return False, "no LLM server in this stack"
        ok, detail = llm_status(server)
        if ok or server.problem or time.monotonic() > deadline:
            return ok, detail
        time.sleep(0.5)


def collect_status(state: StackState) -> StackStatus:
    components: dict[str, tuple[bool, str]] = {}
    for name, server in state.servers.items():
        if name == "llm":
            components[name] = llm_status(server)
            continue
        alive = pid_alive(server.pid) and port_in_use(server.port)
        components[name] = (alive, f"pid {server.pid}, port {server.port}" if alive else "down")
    for name, child in state.services.items():
        ok, detail = health(child.port)
        components[name] = (ok, f"{detail}, pid {child.pid}, port {child.port}, restarts {child.restarts}")
    prometheus = state.servers.get("prometheus")
    url = f"http://127.0.0.1:{prometheus.port}" if prometheus else None
    web = ui_url(f"http://127.0.0.1:{state.services['memory'].port}") if "memory" in state.services else None
    try:
        messages, consumers = asyncio.run(read_bus_status(state.nats_url))
    except Exception as exc:  # the status command reports a broken bus rather than crashing on it
        components["stream"] = (False, f"unreachable: {exc}")
        return StackStatus(components, 0, {}, url, web)
    return StackStatus(components, messages, consumers, url, web)
