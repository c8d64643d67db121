"""The memory service as a process: replay gives identical digests, and so does a kill -9 halfway through."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared import bus
from shared.embedded import ServerProcess, free_port, spawn, stop_process_group
from tests.memory.history import STARTER_EVENTS, baseline_events, build_history

History = list


@pytest.fixture(scope="module")
def history() -> History:
    events = build_history(seed=3, experiments=40)
    assert len(events) >= 200
    return events


class MemoryProcess:
    def __init__(self, nats_url: str, mongo_uri: str, data_dir: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "ASIARCH_NATS_URL": nats_url, "ASIARCH_MONGO_URI": mongo_uri,
                    "ASIARCH_DATA_DIR": str(data_dir), "ASIARCH_HTTP_PORT": str(self.port),
                    "ASIARCH_EMBEDDER": "hashing", "ASIARCH_ACK_WAIT_S": "2", "OMP_NUM_THREADS": "1",
                    # The history's fitness events would have memory ask for replicates of its top runs: events
                    # beyond the history, which these counts of the stream leave out (tests/memory covers them).
                    "ASIARCH_REPLICATE_TOP_K": "0"}
        self.log = data_dir / "memory.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn("memory", [sys.executable, "-m", "services.memory"], self.log, env=self.env)
        self.wait_until(lambda: self.get("/healthz").status_code == 200, "healthy")

    def get(self, path: str) -> httpx.Response:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=30)
        except httpx.HTTPError:
            return httpx.Response(599)

    def seq(self) -> int:
        response = self.get("/admin/digest")
        return response.json()["seq"]["store"] if response.status_code == 200 else -1

    def wait_until(self, condition, what: str, timeout_s: float = 180) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"memory not {what} in time:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


@pytest.fixture
def memory(nats_server: ServerProcess, mongo_uri: str, tmp_path: Path) -> Iterator[MemoryProcess]:
    process = MemoryProcess(f"nats://127.0.0.1:{nats_server.port}", mongo_uri, tmp_path)
    yield process
    process.stop()


async def publish(nats_url: str, events: History) -> None:
    nc = await bus.connect(nats_url, "test")
    js = nc.jetstream()
    await bus.ensure_stream(js, duplicate_window_s=600)
    for event in events:
        await bus.publish(js, event)
    await nc.close()


def digests(memory: MemoryProcess) -> dict[str, dict[str, str]]:
    body = memory.get("/admin/digest").json()
    return {"collections": body["collections"], "indexes": body["indexes"]}


def replay(memory: MemoryProcess, **request: object) -> dict[str, object]:
    started = httpx.post(f"http://127.0.0.1:{memory.port}/admin/replay", json=request, timeout=30)
    assert started.status_code == 202, started.text
    memory.wait_until(lambda: memory.get("/admin/replay").json()["state"] != "running", "replayed")
    job = memory.get("/admin/replay").json()
    assert job["state"] == "finished", job
    return job


def test_replay_rebuilds_identical_projections(memory: MemoryProcess, history: History, tmp_path: Path) -> None:
    memory.start()
    empty = digests(memory)
    # What `asiarch baselines` publishes, after the history: before it, memory would owe (and publish) fitness.
    facts = baseline_events()
    asyncio.run(publish(memory.env["ASIARCH_NATS_URL"], [*history, *facts]))
    memory.wait_until(lambda: memory.seq() == STARTER_EVENTS + len(facts) + len(history), "caught up")
    notes = tmp_path / "notes.md"
    notes.write_text("# Decay\n\nA per-head decay keeps the state bounded.\n\n## Gates\n\nGate the write.\n")
    added = httpx.post(f"http://127.0.0.1:{memory.port}/admin/cognition", json={"path": str(notes)}, timeout=60)
    assert added.status_code == 200 and added.json()["chunks"] == 2, added.text
    before = digests(memory)
    for name in ("baselines", "baseline_mixers", "cognition"):
        assert before["collections"][name] != empty["collections"].get(name), name
    job = replay(memory)
    assert job["total"] == STARTER_EVENTS + len(facts) + len(history) + 1  # + the note's cognition.added
    assert digests(memory) == before
    fork = replay(memory, until_seq=100, into="fork100")
    assert fork["total"] == 100
    bad = httpx.post(f"http://127.0.0.1:{memory.port}/admin/replay", json={"into": "no spaces!"}, timeout=10)
    assert bad.status_code == 422


def test_kill_9_halfway_then_restart_gives_the_same_digests(
    memory: MemoryProcess, history: History, tmp_path: Path
) -> None:
    memory.start()
    asyncio.run(publish(memory.env["ASIARCH_NATS_URL"], history))
    memory.wait_until(lambda: memory.seq() >= len(history) // 2, "halfway")
    assert memory.proc is not None
    os.killpg(memory.proc.pid, signal.SIGKILL)
    memory.proc.wait()
    memory.start()
    memory.wait_until(lambda: memory.seq() == STARTER_EVENTS + len(history), "caught up after the restart")
    after_crash = digests(memory)
    replay(memory)  # the reference: a clean rebuild from the log
    assert digests(memory) == after_crash
