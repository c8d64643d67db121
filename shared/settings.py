"""Settings read from the environment (prefix ``ASIARCH_``), validated on construction.

Each service subclasses ``ServiceSettings`` and sets its own defaults; nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Each service's HTTP port (health, metrics, and for memory the query API) on the embedded stack.
DEFAULT_HTTP_PORTS: dict[str, int] = {
    "researcher": 9101,
    "engineer": 9102,
    "debugger": 9103,
    "analyst": 9104,
    "judge": 9105,
    "memory": 9106,
}
SERVICE_NAMES: tuple[str, ...] = tuple(DEFAULT_HTTP_PORTS)
# Where memory's service serves the web UI on its HTTP port.
UI_PREFIX = "/ui"


def ui_url(memory_url: str) -> str:
    """The web UI's address, given memory's HTTP address."""
    return f"{memory_url.rstrip('/')}{UI_PREFIX}/"


class CommonSettings(BaseSettings):
    """What every process needs to reach the stack."""

    model_config = SettingsConfigDict(env_prefix="ASIARCH_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    mongo_uri: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "asiarch"
    data_dir: Path = Path("var")
    # Seconds the server remembers a message id, so a re-published event is stored once.
    duplicate_window_s: float = Field(default=6 * 3600, gt=0)


class ServiceSettings(CommonSettings):
    """A service's settings; subclasses override ``service_name`` and the port default."""

    service_name: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    # Where the services that query memory (the agents, and the engineer for its duplicate check) find its API.
    memory_url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORTS['memory']}"
    # JetStream delivery policy for the service's durable consumer. A long handler heartbeats its message every
    # ack_wait/3, so ack_wait only bounds how long a message held by a dead instance waits to be redelivered.
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_s: float = Field(default=30.0, gt=0)
    # Backoff between redeliveries after a transient failure, in seconds (last value repeats).
    retry_backoff_s: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)
    # How many messages one instance fetches at once, and how many may await an ack across all instances
    # (0: the bus default). A projection that must apply events in stream order sets 1.
    concurrency: int = Field(default=1, ge=1)
    max_ack_pending: int = Field(default=0, ge=0)

    def resolved_http_port(self) -> int:
        return self.http_port or DEFAULT_HTTP_PORTS.get(self.service_name, 0)
