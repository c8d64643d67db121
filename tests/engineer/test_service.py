"""The engineer's handler against a real nats-server and store: sandboxed training reported as events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import msgspec
import pytest
from nats.js import JetStreamContext
from pymongo.database import Database

from services.engineer.handlers import Engineer, on_candidate, on_replicate
from shared import bus
from shared.events import (
    Budget,
    CampaignStarted,
    Event,
    ProposalCreated,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    decode,
    new_event_id,
    utc_now,
)
from shared.mixer.baselines import BASELINES
from shared.store import MongoLedger, mongo_client
from tests.engineer.variants import gla_variant

FIXTURES = Path(__file__).parent / "fixtures" / "bad_mixers"
POLICY = bus.ConsumerPolicy(max_deliver=2, ack_wait_s=10.0, retry_backoff_s=(0.1,), fetch_timeout_s=0.2)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await bus.connect(nats_url, "test")
    context = nc.jetstream()
    await bus.ensure_stream(context, duplicate_window_s=600)
    yield context
    await nc.close()


def envelope(experiment: str) -> dict[str, object]:
    return {"event_id": new_event_id(), "occurred_at": utc_now(), "producer": "test", "campaign_id": "c1",
            "experiment_id": experiment}


async def run_engineer(js: JetStreamContext, db: Database, engineer: Engineer, events: Sequence[Event],
                       expected_outputs: int) -> list[Event]:
    candidate = partial(on_candidate, engineer)
    handlers = {ProposalCreated: candidate, ReplicateRequested: partial(on_replicate, engineer)}
    consumer = bus.Consumer(js, "engineer", handlers, MongoLedger(db, "engineer"), POLICY)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    for event in events:
        await bus.publish(js, event)
    deadline = asyncio.get_running_loop().time() + 240
    while True:
        outputs = [decode(m.data) async for m in bus.read_stream(js)][len(events):]
        if len(outputs) >= expected_outputs or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    stop.set()
    await task
    return outputs


async def test_proposals_train_fail_or_get_rejected(
    js: JetStreamContext, mongo_uri: str, corpus_dir: Path, tmp_path: Path
) -> None:
    db = mongo_client(mongo_uri)["asiarch"]
    # The default profile is not the one the proposals name: the proposal's own profile must win.
    engineer = Engineer(corpus_dir=corpus_dir, runs_dir=tmp_path / "runs", default_profile="cpu", threads=1,
                        memory_bytes=4 << 30, max_tokens=40_000, eval_samples=4)
    events = [
        CampaignStarted(**envelope(""), profile="smoke", budget=Budget(experiments=3), llm_model="none"),
        ProposalCreated(**envelope("good"), profile="smoke", name="gla-variant", motivation="m", code=gla_variant()),
        ProposalCreated(**envelope("copy"), profile="smoke", name="gla-copy", motivation="m",
                        code=BASELINES["gla"].read_text()),
        ProposalCreated(**envelope("peeks"), profile="smoke", name="peek", motivation="m",
                        code=(FIXTURES / "peek_future.py").read_text()),
        ProposalCreated(**envelope("broken"), profile="smoke", name="broken", motivation="m", code="class Mixer(:\n"),
        # The same code as "good" on another seed, as memory asks for a run that enters the top k.
        ReplicateRequested(**envelope("good"), profile="smoke", code=gla_variant(), seed=1, reason="top 3"),
    ]
    outputs = await run_engineer(js, db, engineer, events, expected_outputs=8)
    by_experiment: dict[str, list[Event]] = {}
    for event in outputs:
        by_experiment.setdefault(event.experiment_id, []).append(event)
    assert [type(e) for e in by_experiment["good"]] == [TrainStarted, TrainSucceeded, ReplicateTrained]
    succeeded, replicate = by_experiment["good"][1:]
    assert isinstance(succeeded, TrainSucceeded) and isinstance(replicate, ReplicateTrained)
    # Another seed, another run: no status change (no train.started), a val loss of its own.
    assert replicate.succeeded and replicate.seed == 1 and replicate.val_loss != succeeded.val_loss
    assert replicate.val_loss is not None and abs(replicate.val_loss - succeeded.val_loss) < 0.5
    assert set(replicate.benchmarks) == set(succeeded.benchmarks) and replicate.cpu_core_seconds > 0
    assert succeeded.profile == "smoke" and succeeded.tokens > 0 and succeeded.val_loss < 7.0
    assert succeeded.cpu_core_seconds > 0 and Path(succeeded.checkpoint_path).is_file()
    assert set(succeeded.benchmarks) >= {"lambada", "piqa", "hellaswag"}
    assert [type(e) for e in by_experiment["peeks"]] == [TrainStarted, TrainFailed]
    failed = by_experiment["peeks"][1]
    assert isinstance(failed, TrainFailed) and failed.error_kind == "causality" and failed.code
    assert failed.profile == "smoke"  # so the debugger's patch trains at the same profile
    broken = by_experiment["broken"]  # a syntax error goes to the debugger, not into the bin
    assert [type(e) for e in broken] == [TrainFailed] and broken[0].error_kind == "syntax"  # type: ignore[attr-defined]
    assert 'mixer.py", line 1' in broken[0].traceback  # type: ignore[attr-defined]
    assert len(succeeded.behaviour) > 0
    # A copy of a baseline is checked, found to compute the same, and rejected before it trains.
    assert [type(e) for e in by_experiment["copy"]] == [TrainStarted, ProposalRejected]
    copied = by_experiment["copy"][1]
    assert isinstance(copied, ProposalRejected) and copied.reason == "duplicate"
    assert "the gla baseline" in copied.detail


def test_a_candidate_trains_at_its_own_profile_and_an_upcast_v1_at_the_default(tmp_path: Path) -> None:
    engineer = Engineer(corpus_dir=tmp_path, runs_dir=tmp_path, default_profile="cpu", threads=1, memory_bytes=1 << 30)
    v1 = decode((Path(__file__).parents[1] / "golden" / "proposal.created.v1.json").read_bytes())
    assert isinstance(v1, ProposalCreated) and engineer.profile_for(v1) == "cpu"
    assert engineer.profile_for(msgspec.structs.replace(v1, profile="smoke")) == "smoke"
