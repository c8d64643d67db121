"""The ops configuration is valid for the real tools: promtool, systemd-analyze, docker-compose, a shell.

Each tool test skips (with the install command) when the tool is missing; CI installs them from
``ops/apt-packages.txt``. Metric names in rules and dashboards must exist in ``shared.metrics`` (or be ``up``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics
from shared.embedded import free_port
from shared.observability import render_config
from shared.settings import DEFAULT_HTTP_PORTS, SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
PROMETHEUS = OPS / "prometheus"
GRAFANA = OPS / "grafana"
SYSTEMD = OPS / "systemd"
DATASOURCE_UID = "asiarch-prometheus"
APT = "apt-get install -y --no-install-recommends"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: {APT} {package}")
    return path


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def yaml_load(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the configs: pip install pyyaml")
    return yaml.safe_load(path.read_text())


# --- metric names ---------------------------------------------------------------------------------------------------

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
                   "bool", "inf", "nan"}


def known_metric_names() -> set[str]:
    """Every series name shared.metrics can expose (counters get _total, histograms _bucket/_sum/_count), plus up."""
    names = {"up"}
    for obj in vars(shared.metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects: identifiers that are not functions, keywords or label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    found = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group(0) in PROMQL_KEYWORDS:
            continue  # a function or aggregation, or a keyword
        found.add(match.group(0))
    return found


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, service) (rate(asiarch_handler_seconds_bucket{a="b"}[5m])))'
            " / on() max(asiarch_campaign_running offset 2h) or vector(0)")
    assert metric_names(expr) == {"asiarch_handler_seconds_bucket", "asiarch_campaign_running"}
    assert {"asiarch_train_runs_total", "asiarch_llm_request_seconds_bucket", "up"} <= known_metric_names()


# --- Prometheus -----------------------------------------------------------------------------------------------------


def rule_exprs() -> list[str]:
    rules = yaml_load(PROMETHEUS / "rules.yml")
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def scrape_targets(config: dict[str, Any]) -> dict[str, str]:
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "asiarch")
    return {static["labels"]["component"]: target for static in job["static_configs"] for target in static["targets"]}


def test_compose_prometheus_config_is_valid() -> None:
    promtool = tool("promtool", "prometheus")
    done = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr
    targets = scrape_targets(yaml_load(PROMETHEUS / "prometheus.yml"))
    assert targets == {name: f"{name}:{port}" for name, port in DEFAULT_HTTP_PORTS.items()}


def render_embedded(tmp_path: Path, ports: dict[str, int]) -> Path:
    text = render_config(ports, 19090)
    assert "{{" not in text, f"placeholders left unrendered: {re.findall(r'{{[^}]*}}', text)}"
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    return path


def test_embedded_template_renders_a_valid_config(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    ports = {name: 20000 + i for i, name in enumerate(SERVICE_NAMES)}
    rendered = render_embedded(tmp_path, ports)
    done = run([promtool, "check", "config", str(rendered)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert scrape_targets(yaml_load(rendered)) == {name: f"127.0.0.1:{port}" for name, port in ports.items()}


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = tool("promtool", "prometheus")
    checked = run([promtool, "check", "rules", str(PROMETHEUS / "rules.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run([promtool, "test", "rules", "rules_test.yml"], cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {rule["alert"] for group in yaml_load(PROMETHEUS / "rules.yml")["groups"] for rule in group["rules"]}
    assert {"AsiarchServiceDown", "AsiarchCrashRateHigh", "AsiarchNoExperimentFinished",
            "AsiarchDeadLetterIncreasing", "AsiarchDeadLetterNotEmpty"} <= names


def test_alert_rules_use_known_metrics() -> None:
    unknown = {name for expr in rule_exprs() for name in metric_names(expr)} - known_metric_names()
    assert not unknown, f"rules.yml uses metrics that shared/metrics.py does not define: {sorted(unknown)}"


# --- Grafana --------------------------------------------------------------------------------------------------------


def dashboards() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        yield path, json.loads(path.read_text())


def panel_targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for path, board in dashboards():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}#{panel['id']}{target['refId']}", panel, target


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    datasources = yaml_load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [(ds["uid"], ds["type"], ds["url"]) for ds in datasources] == [
        (DATASOURCE_UID, "prometheus", "http://prometheus:9090")]
    providers = yaml_load(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]


def test_dashboards_are_well_formed() -> None:
    boards = list(dashboards())
    assert {path.name for path, _ in boards} == {"campaign.json", "system.json"}
    assert len({board["uid"] for _, board in boards}) == len(boards)
    for path, board in boards:
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{path.name}#{panel['id']} is wider than the grid"
            assert panel["targets"], f"{path.name}#{panel['id']} has no query"
    for where, panel, target in panel_targets():
        assert panel["datasource"]["uid"] == DATASOURCE_UID == target["datasource"]["uid"], where
        assert target["expr"].strip() and target["refId"], where


def test_dashboards_use_known_metrics_and_cover_the_brief() -> None:
    used = {name for _, _, target in panel_targets() for name in metric_names(target["expr"])}
    unknown = used - known_metric_names()
    assert not unknown, f"dashboards use metrics that shared/metrics.py does not define: {sorted(unknown)}"
    required = {"up", "asiarch_training_gpu_seconds_total", "asiarch_training_cpu_core_seconds_total",
                "asiarch_experiments_finished_total", "asiarch_train_runs_total", "asiarch_debug_fixed_total",
                "asiarch_best_fitness", "asiarch_proposals_rejected_total", "asiarch_consumer_pending",
                "asiarch_consumer_ack_pending", "asiarch_llm_tokens_total", "asiarch_llm_request_seconds_bucket",
                "asiarch_dead_lettered_total"}
    assert required <= used, f"no panel shows {sorted(required - used)}"


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's PromQL as a recording rule (no server needed)."""
    promtool = tool("promtool", "prometheus")
    rules = [{"record": f"asiarch_dashboard:q{i}", "expr": target["expr"]}
             for i, (_, _, target) in enumerate(panel_targets())]
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))  # JSON is YAML
    done = run([promtool, "check", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr


# --- a real Prometheus evaluates every panel and rule ---------------------------------------------------------------


class SampleCollector:
    """Every metric of shared.metrics, with one sample per outcome, in a registry of its own (the services' global
    metrics stay untouched for other tests). Reads the wrappers' label names: prometheus_client has no public API."""

    def collect(self) -> Iterator[Metric]:
        for obj in vars(shared.metrics).values():
            if isinstance(obj, MetricWrapperBase):
                yield self._family(obj)

    @staticmethod
    def _family(obj: MetricWrapperBase) -> Metric:
        labels = list(obj._labelnames)
        rows = [[("failed" if i % 2 else "trained") if name == "outcome" else "x" for name in labels]
                for i in range(2)]
        name, doc = obj._name, obj._documentation
        if obj._type == "histogram":
            family: Metric = HistogramMetricFamily(name, doc, labels=labels)
            for row in rows:
                family.add_metric(row, buckets=[("1.0", 1.0), ("+Inf", 1.0)], sum_value=1.0)
        elif obj._type == "counter":
            family = CounterMetricFamily(name, doc, labels=labels)
            for row in rows:
                family.add_metric(row, 1.0)
        else:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for row in rows:
                family.add_metric(row, 1.0)
        return family


def api(base: str, path: str, **params: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=5) as response:
        return json.load(response)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, LookupError):  # not up yet, or no data yet
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def live_prometheus(tmp_path: Path) -> Iterator[str]:
    """Prometheus from the embedded template, scraping six targets served by one sample exporter."""
    binary = tool("prometheus", "prometheus")
    registry = CollectorRegistry()
    registry.register(SampleCollector())  # type: ignore[arg-type]
    exporter, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    config = render_embedded(tmp_path, dict.fromkeys(SERVICE_NAMES, exporter.server_port))
    config.write_text(config.read_text().replace("scrape_interval: 5s", "scrape_interval: 1s")
                      .replace("evaluation_interval: 5s", "evaluation_interval: 1s"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"), start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        exporter.shutdown()


def test_every_panel_and_rule_evaluates_on_a_real_prometheus(live_prometheus: str) -> None:
    base = live_prometheus
    # Rates and increases need two samples: wait for the third scrape of all six targets.
    scrapes = 'count(count_over_time(up{job="asiarch"}[1m]) >= 3)'
    wait_until(lambda: api(base, "/api/v1/query", query=scrapes)["data"]["result"][0]["value"][1] == "6", 30,
               "three scrapes of all six targets")
    for where, _, target in panel_targets():
        answer = api(base, "/api/v1/query", query=target["expr"])
        assert answer["status"] == "success", f"{where}: {answer}"
        assert answer["data"]["result"], f"{where} is empty on live data: {target['expr']}"
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules_of(base)), 15,
               "one evaluation of every rule")
    broken = {r["name"]: r.get("lastError") for r in rules_of(base) if r["health"] != "ok"}
    assert not broken, broken


def rules_of(base: str) -> list[dict[str, Any]]:
    return [rule for group in api(base, "/api/v1/rules")["data"]["groups"] for rule in group["rules"]]


# --- systemd --------------------------------------------------------------------------------------------------------


def unit_files() -> list[Path]:
    return [*sorted(SYSTEMD.glob("asiarch*.service")), SYSTEMD / "asiarch.target"]


def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify on copies whose ExecStart points at /bin/true: the install dir does not exist here."""
    analyze = tool("systemd-analyze", "systemd")
    for unit in unit_files():
        text = re.sub(r"/opt/asiarch/\.venv/bin/\S+", "/bin/true", unit.read_text())
        (tmp_path / unit.name).write_text(text)
    done = run([analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())])
    if "Failed to initialize manager" in done.stderr or "System has not been booted" in done.stderr:
        pytest.skip(f"systemd-analyze cannot run in this container: {done.stderr.strip()[:200]}")
    ours = [line for line in done.stderr.splitlines() if "asiarch" in line]
    assert done.returncode == 0 and not ours, done.stderr


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_service_units_run_the_service_hardened(name: str) -> None:
    unit = unit_settings(SYSTEMD / f"asiarch-{name}.service")
    assert unit["ExecStart"] == [f"/opt/asiarch/.venv/bin/python -m services.{name}"]
    assert unit["EnvironmentFile"] == ["/etc/asiarch/asiarch.env"]
    assert unit["Restart"] == ["always"] and unit["RestartSec"] and unit["User"] == ["asiarch"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert unit[key] == [value], f"{name}: {key}"
    assert unit["ReadWritePaths"] == ["/var/lib/asiarch"]
    assert "MemoryDenyWriteExecute" not in unit, "torch JITs: MemoryDenyWriteExecute would break it"
    wanted = unit_settings(SYSTEMD / "asiarch.target")["Wants"]
    assert any(f"asiarch-{name}.service" in line.split() for line in wanted)


# --- cron -----------------------------------------------------------------------------------------------------------


def test_backup_cron_keeps_the_newest(tmp_path: Path) -> None:
    """Run the cron line through sh with a stand-in `asiarch` and temp paths: today's backup plus N-1 old ones stay."""
    tool("flock", "util-linux")
    cron = (OPS / "cron" / "asiarch-backup").read_text().splitlines()
    env = dict(line.split("=", 1) for line in cron if re.match(r"^[A-Z_]+=", line))
    entry = next(line for line in cron if re.match(r"^[0-9*]", line)).split(None, 6)
    assert entry[:5] == ["17", "3", "*", "*", "*"] and entry[5] == "asiarch"
    keep, root = int(env["BACKUP_KEEP"]), tmp_path / "backups"
    old = [date.today() - timedelta(days=d) for d in range(1, keep + 5)]
    for day in old:
        (root / day.isoformat()).mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "asiarch"
    fake.write_text('#!/bin/sh\n[ "$1" = backup ] && mkdir -p "$2" && echo "backed up to $2"\n')
    fake.chmod(0o755)
    (tmp_path / "asiarch.env").write_text("ASIARCH_DATA_DIR=/nowhere\n")
    command = (entry[6].replace("\\%", "%").replace("/etc/asiarch/asiarch.env", str(tmp_path / "asiarch.env"))
               .replace("logger -t asiarch-backup", "cat"))  # no syslog in a container
    shell_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BACKUP_ROOT": str(root), "BACKUP_KEEP": str(keep)}
    done = subprocess.run([env.get("SHELL", "/bin/sh"), "-c", command], env=shell_env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0 and "backed up to" in done.stdout, done.stdout + done.stderr
    remaining = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert remaining == sorted([date.today().isoformat(), *(d.isoformat() for d in old[: keep - 1])])


# --- compose and Dockerfile -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = tool("docker-compose", "docker-compose")
    done = run([binary, "-f", str(ROOT / "compose.yaml"), "config"], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the configs: pip install pyyaml")
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"nats", "mongo", "prometheus", "grafana", "llm", *SERVICE_NAMES}
    assert {"-js", "-sd"} <= set(compose["services"]["nats"]["command"])
    assert compose["services"]["mongo"]["image"].startswith("mongo:7")
    mounts = {v.split(":")[1] if isinstance(v, str) else v["target"]: v
              for name in ("prometheus", "grafana") for v in compose["services"][name]["volumes"]}
    assert {"/etc/prometheus", "/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= set(mounts)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_compose_services(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["command"] == ["python", "-m", f"services.{name}"]
    assert service["build"]["context"] == str(ROOT)
    env = service["environment"]
    assert env["ASIARCH_NATS_URL"] == "nats://nats:4222" and env["ASIARCH_MONGO_URI"] == "mongodb://mongo:27017"
    assert env["ASIARCH_HTTP_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{DEFAULT_HTTP_PORTS[name]}/healthz" in " ".join(service["healthcheck"]["test"])
    assert any(str(v).startswith("asiarch-data:/data") for v in service["volumes"])


def test_compose_agents_share_one_llm_server(compose: dict[str, Any]) -> None:
    llm = compose["services"]["llm"]
    assert "llama.cpp:server" in llm["image"] and "/health" in " ".join(llm["healthcheck"]["test"])
    command = llm["command"]
    assert command[command.index("--alias") + 1] == "qwen2.5-coder-0.5b"
    assert command[command.index("--model") + 1] == "/models/qwen2.5-coder-0.5b.gguf"
    assert {"--metrics", "--parallel", "--cache-ram"} <= set(command)
    for name in SERVICE_NAMES:
        env = compose["services"][name]["environment"]
        assert env["ASIARCH_LLM_BACKEND"] == "openai" and env["ASIARCH_LLM_BASE_URL"] == "http://llm:8080/v1"


def test_compose_engineer_reserves_a_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["engineer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


@pytest.mark.parametrize("name", ["engineer", "researcher"])
def test_services_that_run_generated_code_may_build_its_sandbox(compose: dict[str, Any], name: str) -> None:
    # bubblewrap needs namespaces and a fresh /proc, which Docker's default profiles forbid.
    assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= set(
        compose["services"][name]["security_opt"])


def test_dockerfile_pins_the_same_torch_as_pyproject() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and f"ARG TORCH_VERSION={pin.group(1)}" in dockerfile
    assert "ARG TORCH_INDEX=" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "var"} <= set(ignored)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
