"""A whole campaign on the embedded stack with the real local LLM (Qwen2.5-Coder 0.5B) at the smoke profile.

Events must flow through every service: the researcher proposes with the LLM, the engineer trains in the sandbox,
the debugger patches a failure with the LLM, the analyst and the judge report with the LLM, memory computes the
fitness, and the researcher stops the campaign at its budget. Two mixers are handed in with `asiarch submit` beside
the researcher's proposals (a GLA variant that trains, one with a shape bug), so the success and the failure paths
run whatever the small model writes, and both show in the web UI. `campaign start --wait` follows it all in a log,
one line per event. A real Prometheus scrapes the stack meanwhile, and every dashboard panel's query must return
data.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from shared import bus
from shared.embedded import stop_process_group
from shared.events import (
    AnalysisCreated,
    DeadLettered,
    DebugGaveUp,
    DebugPatched,
    Event,
    FitnessComputed,
    JudgeScored,
    ProposalCreated,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    TrajectoryRecorded,
    decode,
)
from shared.llm import DEFAULT_MODEL, LlmSettings
from shared.models import pull
from shared.observability import prometheus_binary
from shared.supervisor import StackState
from tests.e2e.test_stack import ASIARCH, asiarch, stack_env, stop_leftovers, wait_until
from tests.engineer.variants import gla_variant

DASHBOARDS = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboards"
SHAPE_BUG = Path(__file__).resolve().parents[1] / "engineer" / "fixtures" / "bad_mixers" / "shape_bug.py"
CAPS = {"ASIARCH_MAX_TOKENS": "40000", "ASIARCH_EVAL_SAMPLES": "4"}


@pytest.fixture(scope="module")
def model() -> str:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: run `make install`")
    pull(LlmSettings().models_dir, DEFAULT_MODEL)  # a no-op once pulled
    return DEFAULT_MODEL


def submit(env: dict[str, str], code: str, name: str, tmp_path: Path) -> str:
    """Hand a mixer in as a user would; the experiment id it was given."""
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    done = asiarch(env, "submit", str(path), "--parent", "gla", "--name", name)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split(" as ")[1].split()[0]


async def stream(nats_url: str) -> list[Event]:
    nc = await bus.connect(nats_url, "test")
    events = [decode(m.data) async for m in bus.read_stream(nc.jetstream())]
    await nc.close()
    return events


def panel_queries() -> list[tuple[str, str]]:
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries += [(f"{path.stem}/{panel['title']}", t["expr"]) for t in panel.get("targets", [])]
    return queries


def check_panels(prometheus_url: str) -> None:
    problems = []
    for title, expr in panel_queries():
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=30).json()
        if response.get("status") != "success":
            problems.append(f"{title}: {response.get('error')}")
        elif not response["data"]["result"]:
            problems.append(f"{title}: empty result for {urllib.parse.quote(expr)}")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(2400)
def test_a_campaign_flows_through_every_service(
    model: str, corpus_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed: apt-get install --no-install-recommends prometheus")
    # The agents talk to the stack's one LLM server (no ASIARCH_LLM_BACKEND).
    plumbing = {k: v for k, v in stack_env(tmp_path / "var").items() if k != "ASIARCH_LLM_BACKEND"}
    env = {**plumbing, **CAPS, "ASIARCH_CORPUS_DIR": str(corpus_dir),
           "ASIARCH_EMBEDDER": "minilm", "ASIARCH_MAX_ATTEMPTS": "2",
           "ASIARCH_TRAIN_THREADS": "1", "ASIARCH_LLM_THREADS": "1", "ASIARCH_ACK_WAIT_S": "30",
           # Every path once, not every retry: one revision per draft, a second seed for the leader only.
           "ASIARCH_REVISIONS": "1", "ASIARCH_REPLICATE_TOP_K": "1"}
    up = asiarch(env, "up", "--with-prometheus", timeout=300)
    state = StackState.read(tmp_path / "var")
    if state is not None:  # registered first: an `up` that fails half-way leaves processes to end too
        request.addfinalizer(lambda: stop_leftovers(env, state))
    assert up.returncode == 0, up.stdout + up.stderr
    assert state is not None
    baselines = asiarch(env, "baselines", "--profile", "smoke", "--only", "deltanet", "--max-tokens", "40000",
                        "--eval-samples", "4", timeout=600)
    assert baselines.returncode == 0, baselines.stdout + baselines.stderr
    assert "fitness reference (deltanet, 2 seeds) is recorded" in baselines.stdout
    again = asiarch(env, "baselines", "--profile", "smoke", "--only", "deltanet", "--if-missing")
    assert again.returncode == 0 and "already measured" in again.stdout, again.stdout + again.stderr
    # Followed in a log: stdout is a pipe, so one line per event until the campaign stops, then the leaderboard.
    follower = subprocess.Popen([*ASIARCH, "campaign", "start", "--profile", "smoke", "--budget", "3", "--model",
                                 model, "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    request.addfinalizer(lambda: stop_process_group(follower))  # type: ignore[arg-type]
    assert follower.stdout is not None
    head = [follower.stdout.readline() for _ in range(1)]
    while " started: " not in head[-1] and head[-1] and len(head) < 5:  # a line about the LLM's model may come first
        head.append(follower.stdout.readline())
    assert " started: " in head[-1], "".join(head)
    campaign_id = head[-1].split("campaign ")[1].split()[0]
    good = submit(env, gla_variant(), "gla-variant", tmp_path)
    broken = submit(env, SHAPE_BUG.read_text(), "shape-bug", tmp_path)
    log, _ = follower.communicate(timeout=1500)
    lines = log.splitlines()
    assert follower.returncode == 0, log
    assert any(" train.succeeded " in line and good[:12] in line for line in lines), log
    assert any(" campaign.stopped " in line for line in lines) and "leaderboard" in log, log
    events = asyncio.run(stream(state.nats_url))
    kinds = {type(e) for e in events}
    assert {TrainStarted, TrainSucceeded, TrainFailed, AnalysisCreated, JudgeScored, FitnessComputed} <= kinds
    assert kinds & {DebugPatched, DebugGaveUp}
    assert [e for e in events if isinstance(e, (ProposalCreated, ProposalRejected)) and e.producer == "researcher"]
    assert any(isinstance(e, TrainSucceeded) and e.experiment_id == good for e in events)
    assert any(isinstance(e, (DebugPatched, DebugGaveUp)) and e.experiment_id == broken for e in events)
    ui_shows_the_submissions(state, good, broken)
    conversations_were_kept(env, events, campaign_id)
    moves_have_records(env, events, model)
    # The server's prompt cache: the agents' fixed instructions and earlier turns are not evaluated again.
    usages = [e.llm for e in events if getattr(e, "llm", None) is not None]
    assert sum(u.cached_prompt_tokens for u in usages) > 0.2 * sum(u.prompt_tokens for u in usages)
    assert not [e for e in events if isinstance(e, DeadLettered)]
    analysis = next(e for e in events if isinstance(e, AnalysisCreated))
    assert (Path(analysis.gallery_path) / "loss.png").is_file()
    # A run in the top 3 on one seed is trained on a second; the leaderboard then shows its mean ± sd.
    wait_until(lambda: replicates_settled(asyncio.run(stream(state.nats_url))), timeout_s=600)
    events = asyncio.run(stream(state.nats_url))
    replicated = [e for e in events if isinstance(e, ReplicateTrained) and e.succeeded]
    assert replicated and all(e.seed == 1 for e in replicated)
    time.sleep(6)  # one more scrape after the last event
    check_panels(f"http://127.0.0.1:{state.servers['prometheus'].port}")
    status = asiarch(env, "campaign", "status", "--id", campaign_id)
    assert status.returncode == 0 and "leaderboard" in status.stdout and "(2 seeds)" in status.stdout, status.stdout
    yielded = asiarch(env, "campaign", "yield", "--id", campaign_id, "--json")
    counts = json.loads(yielded.stdout)
    assert {"beat_parent_beyond_noise", "beat_best_baseline_beyond_noise"} <= set(counts), yielded.stdout
    replay_gives_the_same_memory(env, state, tmp_path)


def ui_shows_the_submissions(state: StackState, good: str, broken: str) -> None:
    ui = f"http://127.0.0.1:{state.services['memory'].port}/ui"
    board = httpx.get(f"{ui}/", timeout=30)
    assert board.status_code == 200 and f'data-id="{good}"' in board.text and f'data-id="{broken}"' in board.text
    page = httpx.get(f"{ui}/experiments/{good}", timeout=30)
    assert page.status_code == 200 and "gla-variant" in page.text and "polyline" in page.text
    attempts = httpx.get(f"{ui}/experiments/{broken}", timeout=30).text
    assert "attempt 1: " in attempts


def conversations_were_kept(env: dict[str, str], events: list[Event], campaign_id: str) -> None:
    """Every LLM task's conversation is in the log beside its event, and exported whole."""
    kept = [e for e in events if isinstance(e, TrajectoryRecorded)]
    assert {"researcher", "analyst", "judge"} <= {e.agent for e in kept}
    ids = {e.event_id for e in events}
    assert all(e.of_event in ids for e in kept)
    exported = asiarch(env, "trajectories", "export", "--campaign", campaign_id)
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert exported.returncode == 0 and rows, exported.stdout + exported.stderr
    assert all(row["messages"][-1]["role"] == "assistant" and len(row["messages"]) >= 2 for row in rows)


def moves_have_records(env: dict[str, str], events: list[Event], model: str) -> None:
    """Each researcher proposal named its move, which `asiarch moves` counts; `models list` shows the model's yield."""
    proposed = [e for e in events if isinstance(e, ProposalCreated | ProposalRejected) and e.producer == "researcher"]
    assert all(e.move for e in proposed)
    listed = asiarch(env, "moves", "--model", model)
    assert listed.returncode == 0 and all(e.move in listed.stdout for e in proposed), listed.stdout + listed.stderr
    models = asiarch(env, "models", "list")
    assert models.returncode == 0 and re.search(r"\d+/\d+ \(\d+\)", models.stdout), models.stdout + models.stderr


def replicates_settled(events: list[Event]) -> bool:
    """Every replicate asked for has trained, and each trained one has been judged (the fitness that follows is
    memory's, projected with the judgement) and analysed again."""
    asked = {e.event_id for e in events if isinstance(e, ReplicateRequested)}
    trained = {e.causation_id: e for e in events if isinstance(e, ReplicateTrained)}
    caused = {(type(e), e.causation_id) for e in events}
    judged = {e.event_id for e in events if isinstance(e, JudgeScored) and e.causation_id in
              {t.event_id for t in trained.values()}}
    return bool(asked) and asked <= set(trained) and all(
        not t.succeeded or ((JudgeScored, t.event_id) in caused and (AnalysisCreated, t.event_id) in caused)
        for t in trained.values()) and all((FitnessComputed, j) in caused for j in judged)


def replay_gives_the_same_memory(env: dict[str, str], state: StackState, tmp_path: Path) -> None:
    """After a campaign, `asiarch baselines` and `cognition add`: a replay from the log alone rebuilds all of
    memory (baselines, fitness, cognition, the indexes) with identical digests."""
    notes = tmp_path / "notes.md"
    notes.write_text("# Decay\n\nA per-head decay keeps the state bounded.\n\n## Gates\n\nGate the write.\n")
    added = asiarch(env, "cognition", "add", str(notes))
    assert added.returncode == 0 and "2 chunks from 1 file" in added.stdout, added.stdout + added.stderr
    memory = f"http://127.0.0.1:{state.services['memory'].port}"
    before = httpx.get(f"{memory}/admin/digest", timeout=60).json()
    reference = httpx.get(f"{memory}/baselines/smoke", timeout=30).json()["reference"]
    assert reference["mixer"] == "deltanet" and reference["seeds"] == 2
    replayed = asiarch(env, "replay", timeout=600)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    after = httpx.get(f"{memory}/admin/digest", timeout=60).json()
    assert after["collections"] == before["collections"] and after["indexes"] == before["indexes"]
    assert httpx.get(f"{memory}/baselines/smoke", timeout=30).json()["reference"] == reference
