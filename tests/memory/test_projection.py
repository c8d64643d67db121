"""The MongoDB projection over the real nx-27017 server: content, idempotence, resumability, replay digests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.database import Database

from services.memory.projection import (
    EXPERIMENTS,
    FAILURES,
    PROJECTED_COLLECTIONS,
    Projector,
    digest,
    drop_all,
)
from shared import bus
from shared.events import DebugPatched, ProposalCreated, ProposalRejected, TrainFailed, TrainSucceeded, decode
from tests.memory.history import build_history, numbered
from tests.shared.samples import CODE, envelope

GOLDEN = Path(__file__).parent.parent / "golden"

HISTORY = numbered(build_history())


def test_history_is_realistic() -> None:
    kinds = {type(e).__name__ for _, e in HISTORY}
    assert len(HISTORY) >= 200
    assert {"ProposalRejected", "TrainFailed", "DebugPatched", "DebugGaveUp", "FitnessComputed"} <= kinds


def test_replay_after_drop_gives_identical_digests(db: Database) -> None:
    projector = Projector(db)
    assert projector.apply_all(HISTORY) == len(HISTORY)
    before = digest(db)
    assert projector.last_seq() == len(HISTORY)
    drop_all(db)
    assert all(db[name].count_documents({}) == 0 for name in PROJECTED_COLLECTIONS)
    assert Projector(db).apply_all(HISTORY) == len(HISTORY)
    assert digest(db) == before


def test_every_event_twice_changes_nothing(db: Database) -> None:
    projector = Projector(db)
    for seq, event in HISTORY:
        assert projector.apply(event, seq) is True
        assert projector.apply(event, seq) is False
    once = digest(db)
    assert projector.apply_all(HISTORY) == 0
    assert digest(db) == once


def test_restart_halfway_resumes_exactly(db: Database, mongo_uri: str) -> None:
    half = len(HISTORY) // 2
    Projector(db).apply_all(HISTORY[:half])
    restarted = Projector(db)  # a fresh process reads its position from the tracking collection
    assert restarted.last_seq() == half
    # The consumer may rewind after a crash: redelivering from well before the position is harmless.
    assert restarted.apply_all(HISTORY[half - 20:]) == len(HISTORY) - half
    resumed = digest(db)
    drop_all(db)
    Projector(db).apply_all(HISTORY)
    assert digest(db) == resumed


def test_crash_between_writes_of_one_event_is_finished_on_redelivery(db: Database) -> None:
    """A patch writes the failure and the experiment, then tracking; a crash after the first write is repaired."""
    projector = Projector(db)
    index = next(i for i, (_, e) in enumerate(HISTORY) if isinstance(e, DebugPatched))
    projector.apply_all(HISTORY[:index])
    seq, patch = HISTORY[index]
    projector._debug_patched(patch, seq)  # the failure and the experiment are written, tracking is not
    assert projector.last_seq() == seq - 1
    projector.apply_all(HISTORY[index:])
    crashed = digest(db)
    drop_all(db)
    Projector(db).apply_all(HISTORY)
    assert digest(db) == crashed


def test_experiment_documents_hold_the_story(db: Database) -> None:
    Projector(db).apply_all(HISTORY)
    statuses = {d["status"] for d in db[EXPERIMENTS].find()}
    assert statuses == {"trained", "rejected", "gave_up"}
    patched_ids = {e.experiment_id for _, e in HISTORY if isinstance(e, DebugPatched)}
    trained_ids = {e.experiment_id for _, e in HISTORY if isinstance(e, TrainSucceeded)}
    exp = db[EXPERIMENTS].find_one({"_id": sorted(patched_ids & trained_ids)[0]})
    assert exp is not None
    versions = exp["code_versions"]
    assert [v["version"] for v in versions] == list(range(1, len(versions) + 1)) and len(versions) >= 2
    assert versions[0]["source"] == "proposal" and versions[-1]["source"] == "debug"
    assert versions[-1]["diff"].startswith("---") and exp["code"] == versions[-1]["code"]
    assert exp["train"]["val_loss"] == exp["val_loss"] and len(exp["train"]["curve"]) == 11
    assert exp["has_fitness"] and exp["fitness_total"] == exp["fitness"]["total"]
    assert exp["finished_at"] > exp["created_at"]  # datetimes stay datetimes (nx-27017 stringifies a $set one)
    assert exp["judge"]["weighted"] == pytest.approx(0.3 * exp["judge"]["performance"]
                                                     + 0.25 * exp["judge"]["innovation"]
                                                     + 0.45 * exp["judge"]["complexity"], abs=1e-3)
    assert exp["analysis"]["sections"][0]["title"] == "Result"
    assert exp["n_failures"] >= 1 and exp["n_patches"] >= 1 and exp["llm"]["calls"] >= 4


def test_failures_record_the_fix_and_whether_it_worked(db: Database) -> None:
    Projector(db).apply_all(HISTORY)
    failed = [e for _, e in HISTORY if isinstance(e, TrainFailed)]
    assert db[FAILURES].count_documents({}) == len(failed)
    outcomes = {d["outcome"] for d in db[FAILURES].find()}
    assert outcomes == {"patched", "gave_up"}
    for doc in db[FAILURES].find({"outcome": "patched"}):
        assert doc["fix"]["attempt"] == doc["attempt"] + 1
        retried = [e for _, e in HISTORY if e.experiment_id == doc["experiment_id"]
                   and isinstance(e, (TrainFailed, TrainSucceeded)) and e.attempt == doc["attempt"] + 1]
        assert doc["fix_worked"] == isinstance(retried[0], TrainSucceeded)
    assert {d["fix_worked"] for d in db[FAILURES].find({"outcome": "patched"})} == {True, False}


def test_campaign_and_tracking(db: Database) -> None:
    Projector(db).apply_all(HISTORY)
    campaign = db["campaigns"].find_one({"_id": "camp-a"})
    assert campaign is not None and campaign["status"] == "stopped" and campaign["profile"] == "smoke"
    assert db["tracking"].find_one({"_id": "memory"})["seq"] == len(HISTORY)


def test_sequence_must_be_positive(db: Database) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        Projector(db).apply(HISTORY[0][1], 0)


@pytest.mark.parametrize(("batch", "fresh"), [(7, False), (500, False), (7, True), (500, True)])
def test_batched_replay_writes_the_same_documents(db: Database, batch: int, fresh: bool) -> None:
    Projector(db).apply_all(HISTORY)
    one_by_one = digest(db)
    drop_all(db)
    assert Projector(db).apply_all(HISTORY, batch=batch, fresh=fresh) == len(HISTORY)
    assert digest(db) == one_by_one


def test_a_replay_in_chunks_after_a_drop_reads_nothing_back(db: Database) -> None:
    """In one batched block the chunks share their documents; after a drop none is looked up in the store."""
    Projector(db).apply_all(HISTORY)
    one_by_one = digest(db)
    projector = Projector(db)
    projector.drop()
    reads = []
    original = projector.db.__class__.__getitem__

    def counting(database: Database, name: str):  # type: ignore[no-untyped-def]
        collection = original(database, name)
        find_one = collection.find_one
        collection.find_one = lambda *a, **k: reads.append(name) or find_one(*a, **k)  # type: ignore[method-assign]
        return collection

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projector.db.__class__, "__getitem__", counting)
        with projector.batched(50, fresh=True):
            for start in range(0, len(HISTORY), 50):
                projector.apply_all(HISTORY[start:start + 50])
    assert [name for name in reads if name != "tracking"] == []
    assert digest(db) == one_by_one


def test_batched_replay_after_a_crash_mid_batch(db: Database) -> None:
    """Documents of a batch are written, tracking is not: the redelivered batch changes nothing it already did."""
    projector = Projector(db)
    projector.apply_all(HISTORY[:100], batch=50)
    projector._batch = {}
    for seq, event in HISTORY[100:160]:
        projector.apply(event, seq)
    projector._tracked = {}  # the crash: documents flushed, tracking never written
    projector._flush()
    restarted = Projector(db)
    assert restarted.last_seq() == 100
    restarted.apply_all(HISTORY[100:], batch=50)
    crashed = digest(db)
    drop_all(db)
    Projector(db).apply_all(HISTORY)
    assert digest(db) == crashed


@pytest.mark.parametrize("batch", [1, 64])
def test_each_experiment_counts_the_children_derived_from_it(db: Database, batch: int) -> None:
    Projector(db).apply_all(HISTORY, batch=batch)
    docs = list(db[EXPERIMENTS].find({}, {"parent_ids": 1, "n_children": 1}))
    derived: dict[str, int] = {}
    for doc in docs:
        if doc["parent_ids"]:
            derived[doc["parent_ids"][0]] = derived.get(doc["parent_ids"][0], 0) + 1
    assert any(derived.get(doc["_id"]) for doc in docs)  # the history has experiments with children
    assert {doc["_id"]: doc["n_children"] for doc in docs} == {doc["_id"]: derived.get(doc["_id"], 0) for doc in docs}


def test_a_rejected_draft_keeps_its_code_and_a_rejected_proposal_its_own(db: Database) -> None:
    drop_all(db)
    projector = Projector(db)
    projector.apply(ProposalRejected(**envelope(1, "draft"), reason="syntax", detail="line 3", name="n",
                                     motivation="m", code=CODE, parent_ids=("baseline:gla",)), 1)
    projector.apply(ProposalCreated(**envelope(2, "proposal"), profile="smoke", name="p", motivation="m",
                                    code=CODE + "\n# v1\n", parent_ids=("baseline:gla",)), 2)
    projector.apply(ProposalRejected(**envelope(3, "proposal"), reason="duplicate", detail="equal outputs"), 3)
    draft, proposal = db[EXPERIMENTS].find_one({"_id": "draft"}), db[EXPERIMENTS].find_one({"_id": "proposal"})
    assert draft is not None and proposal is not None
    assert (draft["code"], draft["name"], draft["parent_ids"]) == (CODE, "n", [])  # a draft is nobody's child
    assert draft["rejection"]["parent_ids"] == ["baseline:gla"]
    assert proposal["code"].endswith("# v1\n") and proposal["status"] == "rejected"


async def test_a_v1_proposal_in_an_old_stream_decodes_and_projects(nats_url: str, db: Database) -> None:
    """A stream written before proposals carried their profile still reads: the v1 payload comes back upcast."""
    nc = await bus.connect(nats_url, "test")
    js = nc.jetstream()
    await bus.ensure_stream(js, duplicate_window_s=60)
    await js.publish(ProposalCreated.subject(), (GOLDEN / "proposal.created.v1.json").read_bytes())
    [(seq, event)] = [(m.seq, decode(m.data)) async for m in bus.read_stream(js)]
    await nc.close()
    assert isinstance(event, ProposalCreated) and event.profile == ""
    Projector(db).apply(event, seq)
    doc = db[EXPERIMENTS].find_one({"_id": event.experiment_id})
    assert doc is not None and doc["name"] == event.name and doc["code"] == event.code and doc["status"] == "proposed"
