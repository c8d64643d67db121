"""Prometheus beside the embedded stack: the config rendered from ``ops/prometheus/embedded.yml.tmpl``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from shared.embedded import ServerProcess, ServerStartError, port_in_use, spawn, wait_for_port

OPS = Path(__file__).resolve().parents[1] / "ops" / "prometheus"
TEMPLATE = OPS / "embedded.yml.tmpl"
RULES = OPS / "rules.yml"
PLACEHOLDER = re.compile(r"{{(\w+)}}")


def render_config(http_ports: dict[str, int], prometheus_port: int, interval: str = "5s",
                  host: str = "127.0.0.1", llm_port: int = 0) -> str:
    """The template with every placeholder filled; a placeholder without a value is an error, not a hole.
    ``llm_port`` 0: the stack runs no LLM server; that target stays down."""
    values = {"scrape_interval": interval, "rules_file": str(RULES), "host": host,
              "prometheus_port": str(prometheus_port), "port_llm": str(llm_port)}
    values |= {f"port_{name}": str(port) for name, port in http_ports.items()}

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{TEMPLATE.name} needs a value for {match.group(1)}")
        return values[match.group(1)]

    return PLACEHOLDER.sub(fill, TEMPLATE.read_text())


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_prometheus(data_dir: Path, http_ports: dict[str, int], port: int, interval: str = "5s",
                     llm_port: int = 0) -> ServerProcess:
    binary = prometheus_binary()
    if binary is None:
        raise ServerStartError("prometheus is not installed (Debian: apt-get install --no-install-recommends "
                               "prometheus); start without --with-prometheus")
    if port_in_use(port):
        raise ServerStartError(f"port {port} is in use: set ASIARCH_PROMETHEUS_PORT")
    home = data_dir / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(render_config(http_ports, port, interval, llm_port=llm_port))
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    log_path = data_dir / "logs" / "prometheus.log"
    proc = spawn("prometheus", argv, log_path)
    wait_for_port(port, "127.0.0.1", 30, proc)
    return ServerProcess("prometheus", proc, "127.0.0.1", port, log_path)
