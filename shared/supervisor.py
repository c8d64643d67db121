"""The embedded stack's supervisor: nats-server, the store, the LLM server and the six services as child processes.

It runs in the foreground of its own process (``asiarch up`` starts it detached). A service or the LLM server that
exits is restarted with exponential backoff and logged; SIGTERM stops the services, then the LLM, the store and NATS.
The state file (``<data dir>/stack.json``) holds every PID and port, so ``status`` and ``down`` find them without
guessing names.

The agents talk to the one LLM server (``shared.llm_server``) unless ``ASIARCH_LLM_BACKEND`` says otherwise:
``openai`` with ``ASIARCH_LLM_BASE_URL`` for an endpoint elsewhere, ``llama_cpp`` for a model in each agent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.embedded import ServerProcess, ServerStartError, spawn, start_mongo, start_nats, stop_process_groups
from shared.llm_server import LlmServerSettings, server_url, spawn_llm_server, stack_runs_server
from shared.observability import start_prometheus
from shared.settings import SERVICE_NAMES

log = logging.getLogger("asiarch.supervisor")

STATE_FILE = "stack.json"
STABLE_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0


@dataclass
class StackPorts:
    nats: int = 4222
    store: int = 27017
    http: dict[str, int] = field(default_factory=dict)
    prometheus: int = 0  # 0: no Prometheus
    llm: int = 9107


@dataclass
class ChildState:
    pid: int
    port: int
    restarts: int = 0
    started_at: float = 0.0
    problem: str = ""  # why it is not running, for `asiarch status`


@dataclass
class StackState:
    supervisor_pid: int
    data_dir: str
    nats_url: str
    mongo_uri: str
    embedded_store: bool
    status: str = "starting"
    servers: dict[str, ChildState] = field(default_factory=dict)
    services: dict[str, ChildState] = field(default_factory=dict)
    # Where the agents' LLM is: the stack's own server (``llm`` among the servers), an endpoint, or in each agent.
    llm: str = ""

    def all_pids(self) -> list[int]:
        children = (*self.servers.values(), *self.services.values())
        return [self.supervisor_pid] + [c.pid for c in children if c.pid > 0]

    @classmethod
    def read(cls, data_dir: Path) -> StackState | None:
        path = data_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        raw["servers"] = {k: ChildState(**v) for k, v in raw["servers"].items()}
        raw["services"] = {k: ChildState(**v) for k, v in raw["services"].items()}
        return cls(**raw)

    def write(self, data_dir: Path) -> None:
        tmp = data_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(data_dir / STATE_FILE)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Supervised:
    """A child restarted when it exits. ``start`` raises ``ServerStartError`` when it cannot start now (a model
    not pulled yet): that is retried like an exit, and said in ``problem``."""

    name: str
    port: int
    start: Callable[[], subprocess.Popen[bytes]]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    problem: str = ""

    def launch(self, now: float) -> None:
        self.started_at, self.restart_at = now, None
        try:
            self.proc, self.problem = self.start(), ""
        except ServerStartError as exc:
            self.proc, self.problem = None, str(exc)
            log.error("%s cannot start: %s", self.name, exc)

    def exit_code(self) -> int | None:
        """None while running or waiting for its restart."""
        if self.restart_at is not None:
            return None
        if self.proc is None:
            return -1
        return self.proc.poll()

    def child_state(self) -> ChildState:
        return ChildState(self.proc.pid if self.proc else 0, self.port, self.restarts, self.started_at, self.problem)


class Supervisor:
    def __init__(self, data_dir: Path, ports: StackPorts, mongo_uri: str | None) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = ports
        self.external_mongo_uri = mongo_uri
        self.servers: dict[str, ServerProcess] = {}
        self.children: dict[str, Supervised] = {}
        self.llm_settings = LlmServerSettings()
        self.llm_server: Supervised | None = None
        self.stopping = False

    # --- start -----------------------------------------------------------------------------------------------------

    def start(self) -> StackState:
        self.servers["nats"] = start_nats(self.data_dir, self.ports.nats)
        if self.external_mongo_uri is None:
            self.servers["store"] = start_mongo(self.data_dir, self.ports.store)
        self.start_llm()
        self.state("starting")
        for name in SERVICE_NAMES:
            child = Supervised(name, self.ports.http[name], lambda name=name: self.spawn_service(name))
            child.launch(time.monotonic())
            self.children[name] = child
        if self.ports.prometheus:
            self.servers["prometheus"] = start_prometheus(
                self.data_dir, self.ports.http, self.ports.prometheus,
                llm_port=self.ports.llm if self.llm_server else 0)
        return self.state("running")

    def start_llm(self) -> None:
        """The stack's LLM server, unless the settings name another backend or none is installed."""
        if not stack_runs_server(self.llm_settings):
            if self.llm_settings.llm_backend == "llama_cpp":
                log.warning("no LLM server (ASIARCH_LLM_BACKEND=llama_cpp, or llama-server not installed: "
                            "`make install` builds it): each agent loads its own model")
            return
        self.llm_server = Supervised("llm", self.ports.llm,
                                     lambda: spawn_llm_server(self.data_dir, self.ports.llm, self.llm_settings))
        self.llm_server.launch(time.monotonic())

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.nats}"

    @property
    def mongo_uri(self) -> str:
        return self.external_mongo_uri or f"mongodb://127.0.0.1:{self.ports.store}"

    @property
    def llm_url(self) -> str:
        return server_url(self.ports.llm)

    def llm_description(self) -> str:
        if self.llm_server is not None:
            return f"server {self.llm_url}"
        if self.llm_settings.llm_backend == "openai":
            return f"endpoint {self.llm_settings.llm_base_url}"
        return "in each agent"

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ASIARCH_NATS_URL": self.nats_url, "ASIARCH_MONGO_URI": self.mongo_uri,
            "ASIARCH_DATA_DIR": str(self.data_dir), "ASIARCH_HTTP_PORT": str(self.ports.http[name]),
            "ASIARCH_HTTP_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
            "ASIARCH_MEMORY_URL": f"http://127.0.0.1:{self.ports.http['memory']}",
        })
        if self.llm_server is not None:
            env.update({"ASIARCH_LLM_BACKEND": "openai", "ASIARCH_LLM_BASE_URL": self.llm_url})
        # Only the engineer trains; the others stay on one thread so they don't fight it for the cores.
        if name != "engineer":
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def spawn_service(self, name: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", f"services.{name}"]
        return spawn(name, argv, self.data_dir / "logs" / f"{name}.log", env=self.service_env(name))

    # --- watch -----------------------------------------------------------------------------------------------------

    def supervised(self) -> list[Supervised]:
        return [*self.children.values(), *([self.llm_server] if self.llm_server else [])]

    def watch_once(self) -> bool:
        """Restart what died; True when the state changed."""
        changed = False
        now = time.monotonic()
        for child in self.supervised():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.launch(now)
                    child.restarts += 1
                    if child.proc is not None:
                        log.info("restarted %s (pid %d, restart %d)", child.name, child.proc.pid, child.restarts)
                    changed = True
                continue
            code = child.exit_code()
            if code is None:
                continue
            delay = self.backoff(child, now)
            if child.proc is not None:
                log.error("%s exited with code %s; restarting in %.1f s (see logs/%s.log)", child.name, code, delay,
                          child.name)
            child.restart_at = now + delay
        for name, server in self.servers.items():
            if server.proc.poll() is not None and not self.stopping:
                log.error("%s exited with code %s: the stack cannot run without it", name, server.proc.returncode)
                raise RuntimeError(f"{name} died")
        return changed

    @staticmethod
    def backoff(child: Supervised, now: float) -> float:
        if now - child.started_at > STABLE_AFTER_S:
            return 0.5
        return min(MAX_BACKOFF_S, 0.5 * 2 ** min(child.restarts, 8))

    # --- stop ------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True
        stop_process_groups([child.proc for child in self.children.values() if child.proc], timeout_s=15)
        if self.llm_server is not None and self.llm_server.proc is not None:
            stop_process_groups([self.llm_server.proc], timeout_s=10)
        for name in ("prometheus", "store", "nats"):
            if name in self.servers:
                self.servers[name].stop()

    def state(self, status: str) -> StackState:
        state = StackState(
            supervisor_pid=os.getpid(), data_dir=str(self.data_dir), nats_url=self.nats_url,
            mongo_uri=self.mongo_uri, embedded_store="store" in self.servers, status=status,
            servers={n: ChildState(s.pid, s.port) for n, s in self.servers.items()}
            | ({"llm": self.llm_server.child_state()} if self.llm_server else {}),
            services={n: c.child_state() for n, c in self.children.items()}, llm=self.llm_description(),
        )
        state.write(self.data_dir)
        return state


def serve(data_dir: Path, ports: StackPorts, mongo_uri: str | None) -> int:
    """Run the stack until SIGTERM/SIGINT. Returns the process exit code."""
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    supervisor = Supervisor(data_dir, ports, mongo_uri)
    code = 0
    try:
        supervisor.start()
        log.info("stack running in %s", supervisor.data_dir)
        while not stop_requested:
            if supervisor.watch_once():
                supervisor.state("running")
            time.sleep(0.2)
    except Exception:
        log.exception("the stack failed")
        code = 1
    finally:
        supervisor.stop()
        (supervisor.data_dir / STATE_FILE).unlink(missing_ok=True)
        log.info("stack stopped")
    return code


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s: %(message)s")
    config = json.loads(sys.argv[1])
    ports = StackPorts(nats=config["nats_port"], store=config["store_port"], http=config["http_ports"],
                       prometheus=config.get("prometheus_port", 0), llm=config.get("llm_port", 9107))
    sys.exit(serve(Path(config["data_dir"]), ports, config.get("mongo_uri")))


if __name__ == "__main__":
    main()
