"""The embedded stack end to end: `asiarch up`, `status`, `down`, crash recovery under the supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared import bus
from shared.cli.stack import serve_model
from shared.embedded import free_ports
from shared.events import (
    DeadLettered,
    DebugGaveUp,
    DebugPatched,
    ProposalCreated,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    decode,
    new_event_id,
    utc_now,
)
from shared.llm import DEFAULT_MODEL
from shared.llm_server import LlmServerSettings, server_binary, server_stats, server_url
from shared.models import pull, resolve
from shared.settings import SERVICE_NAMES
from shared.store import mongo_client
from shared.supervisor import StackState, pid_alive
from tests.engineer.variants import gla_variant
from tests.memory.history import STARTER_EVENTS
from tests.processes import pids_working_in

ASIARCH = [sys.executable, "-m", "shared.cli.main"]
# The engineer fails this at once (a syntax error, no corpus needed) and the debugger, allowed no patch, gives up:
# fast handlers with one output event per input.
BROKEN_MIXER = "import torch\n\nclass Mixer(torch.nn.Module:\n    pass\n"


def stack_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASIARCH_")}
    nats, mongo, prometheus, llm, *services = free_ports(4 + len(SERVICE_NAMES))
    env.update({
        "ASIARCH_DATA_DIR": str(data_dir), "ASIARCH_NATS_PORT": str(nats), "ASIARCH_MONGO_PORT": str(mongo),
        "ASIARCH_PROMETHEUS_PORT": str(prometheus), "ASIARCH_LLM_PORT": str(llm),
        "ASIARCH_HTTP_PORTS": json.dumps(dict(zip(SERVICE_NAMES, services, strict=True))),
        # A message held by a killed instance is redelivered after ack_wait: keep crash tests short.
        "ASIARCH_ACK_WAIT_S": "3",
        # The plumbing tests here need no semantic search; memory's own tests cover the real embedder.
        "ASIARCH_EMBEDDER": "hashing",
        # Nor an LLM: a failed attempt goes straight to debug.gave_up, and no LLM server is started (the campaign
        # test and tests/shared/test_llm_server.py run it).
        "ASIARCH_MAX_ATTEMPTS": "1", "ASIARCH_LLM_BACKEND": "llama_cpp",
    })
    return env


def asiarch(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ASIARCH, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], StackState]]:
    data_dir = tmp_path / "var"
    env = stack_env(data_dir)
    started = time.monotonic()
    result = asiarch(env, "up")
    state = StackState.read(data_dir)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        print(f"asiarch up until all healthy: {time.monotonic() - started:.1f} s")
        assert state is not None
        yield env, state
    finally:
        if state is not None:  # an `up` that failed half-way has started processes too
            stop_leftovers(env, state)


def stop_leftovers(env: dict[str, str], state: StackState) -> None:
    """`asiarch down`, then SIGKILL by PID whatever is still there (the test may have failed half-way)."""
    if pid_alive(state.supervisor_pid):
        asiarch(env, "down")
    for pid in state.all_pids():
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_up_status_down_leaves_no_process(running_stack: tuple[dict[str, str], StackState]) -> None:
    env, state = running_stack
    status = asiarch(env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert set(report["components"]) >= {"nats", "store", *SERVICE_NAMES}
    assert set(report["consumers"]) == set(SERVICE_NAMES)
    web = httpx.get(report["ui_url"], timeout=30)
    assert web.status_code == 200 and "Leaderboard" in web.text, report["ui_url"]
    assert f"web UI: {report['ui_url']}" in asiarch(env, "status").stdout
    pids = [pid for pid in state.all_pids()]
    assert len(pids) == 1 + 2 + len(SERVICE_NAMES) and all(pid_alive(pid) for pid in pids)
    down = asiarch(env, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert asiarch(env, "status").returncode == 1


def test_a_second_up_and_a_busy_port_fail_clearly(running_stack: tuple[dict[str, str], StackState]) -> None:
    env, state = running_stack
    again = asiarch(env, "up")
    assert again.returncode == 1 and "already runs" in again.stderr and "Traceback" not in again.stderr
    other = dict(env, ASIARCH_DATA_DIR=str(Path(state.data_dir).parent / "other"))
    busy = asiarch(other, "up")
    assert busy.returncode == 1 and "port in use" in busy.stderr and "Traceback" not in busy.stderr


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "var")
    unknown = asiarch(env, "launch")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    flag = asiarch(env, "up", "--colour")
    assert flag.returncode == 2 and "No such option" in flag.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = asiarch(env, "up", "--data-dir", str(blocker / "var"))
    assert unwritable.returncode == 1 and "not writable" in unwritable.stderr
    assert "Traceback" not in unknown.stderr + flag.stderr + unwritable.stderr


async def publish_proposals(nats_url: str, count: int, code: str = BROKEN_MIXER) -> list[ProposalCreated]:
    nc = await bus.connect(nats_url, "test")
    js = nc.jetstream()
    events = [
        ProposalCreated(event_id=new_event_id(), occurred_at=utc_now(), producer="test", campaign_id="c",
                        experiment_id=f"exp-{n}", name=f"m{n}", motivation="m", code=code, profile="smoke")
        for n in range(count)
    ]
    for event in events:
        await bus.publish(js, event)
    await nc.close()
    return events


async def stream_events(nats_url: str) -> list[object]:
    nc = await bus.connect(nats_url, "test")
    messages = [decode(m.data) async for m in bus.read_stream(nc.jetstream())]
    await nc.close()
    return messages


def wait_until(condition, timeout_s: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_killed_service_is_restarted_and_its_events_handled_once(
    running_stack: tuple[dict[str, str], StackState],
) -> None:
    _, state = running_stack
    db = mongo_client(state.mongo_uri)["asiarch"]
    events = asyncio.run(publish_proposals(state.nats_url, 200))
    victim = state.services["engineer"].pid
    wait_until(lambda: db.processed.count_documents({"service": "engineer"}) >= 10)
    os.kill(victim, signal.SIGKILL)  # mid-burst: it is handling one of them right now

    def restarted() -> bool:
        now = StackState.read(Path(state.data_dir))
        return now is not None and now.services["engineer"].restarts == 1 and now.services["engineer"].pid != victim

    wait_until(restarted)
    wait_until(lambda: db.processed.count_documents({"service": "engineer"}) == 200)
    wait_until(lambda: db.tracking.find_one({"_id": "memory"}, {"seq": 1}) == {"_id": "memory",
                                                                            "seq": STARTER_EVENTS + 600})
    failed = [e for e in asyncio.run(stream_events(state.nats_url)) if isinstance(e, TrainFailed)]
    per_experiment = Counter(e.experiment_id for e in failed)
    assert per_experiment == Counter({e.experiment_id: 1 for e in events})
    assert db.experiments.count_documents({"status": "gave_up"}) == 200



@pytest.mark.slow
def test_a_missing_corpus_waits_for_the_operator_and_a_killed_engineer_leaves_no_sandbox(
    tmp_path: Path,
) -> None:
    """No prepared corpus: a campaign is refused with the step named, the engineer takes no work and says why, a
    proposal waits queued (never a train.failed) and trains once `asiarch data prepare` ran. kill -9 of the
    engineer mid-run leaves no sandboxed process behind, and the work is done after its restart."""
    data_dir = tmp_path / "var"
    env = {**stack_env(data_dir), "ASIARCH_MAX_TOKENS": "24000", "ASIARCH_EVAL_SAMPLES": "0"}
    up = asiarch(env, "up")
    state = StackState.read(data_dir)
    try:
        assert up.returncode == 0 and state is not None, up.stdout + up.stderr
        refused = asiarch(env, "campaign", "start", "--profile", "smoke")
        assert refused.returncode == 1 and "asiarch data prepare --tokenizer bpe1k" in refused.stderr
        assert "asiarch baselines --profile smoke" in refused.stderr and "Traceback" not in refused.stderr
        [proposal] = asyncio.run(publish_proposals(state.nats_url, 1, code=gla_variant()))
        time.sleep(8)  # delivered, found waiting, put back (uncounted) with a backoff
        status = json.loads(asiarch(env, "status", "--json").stdout)
        assert "asiarch data prepare" in status["components"]["engineer"]["detail"]
        queued = status["consumers"]["engineer"]
        assert queued["pending"] + queued["ack_pending"] == 1
        assert not [e for e in asyncio.run(stream_events(state.nats_url)) if isinstance(e, (TrainStarted,
                                                                                           TrainFailed))]
        prepared = asiarch(env, "data", "prepare", "--sources", "shakespeare", "--tokenizer", "bpe1k", timeout=600)
        assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        runs = data_dir / "runs" / proposal.experiment_id
        wait_until(lambda: bool(pids_working_in(runs)), timeout_s=120)
        sandboxed = pids_working_in(runs)
        os.kill(state.services["engineer"].pid, signal.SIGKILL)
        wait_until(lambda: not [pid for pid in sandboxed if pid_alive(pid)], timeout_s=15)

        def trained() -> bool:
            return any(isinstance(e, TrainSucceeded) for e in asyncio.run(stream_events(state.nats_url)))

        wait_until(trained, timeout_s=300)
        events = asyncio.run(stream_events(state.nats_url))
        assert not [e for e in events if isinstance(e, (TrainFailed, DebugPatched, DebugGaveUp, DeadLettered))]
    finally:
        if state is not None:
            stop_leftovers(env, state)


@pytest.mark.slow
def test_the_agents_share_one_supervised_llm_server(tmp_path: Path) -> None:
    """`up` starts one llama-server for every agent: status shows its model and rates, kill -9 gets it restarted,
    a campaign's other model gets it restarted on that model, and `down` leaves no process."""
    settings = LlmServerSettings()
    if server_binary(settings) is None:
        pytest.skip("llama-server is not installed: run `make install`")
    pull(settings.models_dir, DEFAULT_MODEL)  # a no-op once pulled
    data_dir = tmp_path / "var"
    env = {k: v for k, v in stack_env(data_dir).items() if k != "ASIARCH_LLM_BACKEND"}
    up = asiarch(env, "up")
    state = StackState.read(data_dir)
    try:
        assert up.returncode == 0 and state is not None, up.stdout + up.stderr
        assert "llm" in state.servers and state.llm.startswith("server")
        environ = Path(f"/proc/{state.services['researcher'].pid}/environ").read_bytes().split(b"\0")
        assert b"ASIARCH_LLM_BACKEND=openai" in environ
        url = server_url(state.servers["llm"].port)
        wait_until(lambda: server_stats(url) is not None, timeout_s=60)
        llm = json.loads(asiarch(env, "status", "--json").stdout)["components"]["llm"]
        assert llm["ok"] and DEFAULT_MODEL in llm["detail"] and "tok/s" in llm["detail"], llm
        victim = state.servers["llm"].pid
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            now = StackState.read(data_dir)
            return now is not None and now.servers["llm"].pid != victim and server_stats(url) is not None

        wait_until(restarted, timeout_s=60)
        # Another model, as a campaign would name it: the same file by its path is another alias.
        other = str(resolve(settings.models_dir, DEFAULT_MODEL))
        current = StackState.read(data_dir)
        assert current is not None and serve_model(current, other, timeout_s=60)
        stats = server_stats(url)
        assert stats is not None and stats.model == other
        assert not serve_model(current, other)  # already served: nothing restarted
        pids = StackState.read(data_dir).all_pids()  # type: ignore[union-attr]
        assert asiarch(env, "down").returncode == 0
        assert [pid for pid in pids if pid_alive(pid)] == []
    finally:
        if state is not None:
            stop_leftovers(env, state)
