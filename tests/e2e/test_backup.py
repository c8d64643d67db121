"""Backup → wipe → restore → replay gives the same memory; a missing or corrupt backup changes nothing."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.memory.projection import Projector, digest
from shared import bus
from shared.backup import BackupError, backup, restore, verify
from shared.embedded import free_port, start_mongo, start_nats
from shared.events import decode
from shared.store import mongo_client
from shared.supervisor import StackState
from tests.e2e.test_stack import asiarch, stack_env
from tests.memory.history import baseline_events, build_history, cognition_event


class Stack:
    """A fresh nats-server and store in a folder of their own."""

    def __init__(self, root: Path) -> None:
        self.nats = start_nats(root / "nats", free_port())
        self.mongo = start_mongo(root / "mongo", free_port())
        self.client = mongo_client(f"mongodb://127.0.0.1:{self.mongo.port}")
        self.db = self.client["asiarch"]

    async def js(self):  # type: ignore[no-untyped-def]
        self.nc = await bus.connect(f"nats://127.0.0.1:{self.nats.port}", "test")
        js = self.nc.jetstream()
        await bus.ensure_stream(js, duplicate_window_s=600)
        return js

    def stop(self) -> None:
        self.client.close()
        self.mongo.stop()
        self.nats.stop()


@pytest.fixture
async def stacks(tmp_path: Path) -> AsyncIterator[tuple[Stack, Stack]]:
    first, second = Stack(tmp_path / "first"), Stack(tmp_path / "second")
    yield first, second
    for stack in (first, second):
        if hasattr(stack, "nc"):
            await stack.nc.close()
        stack.stop()


async def project(js, db) -> dict[str, str]:  # type: ignore[no-untyped-def]
    pairs = [(m.seq, decode(m.data)) async for m in bus.read_stream(js)]
    projector = Projector(db)
    projector.drop()
    projector.apply_all(pairs, batch=500)
    return digest(db)


async def test_backup_wipe_restore_replay_gives_the_same_memory(stacks: tuple[Stack, Stack], tmp_path: Path) -> None:
    first, second = stacks
    js = await first.js()
    for event in [*baseline_events("smoke", "deltanet", (4.0, 4.1), (0.3, 0.31)), cognition_event(),
                  *build_history(seed=5, experiments=30)]:
        await bus.publish(js, event)
    before = await project(js, first.db)
    gallery = tmp_path / "gallery" / "exp-1"
    gallery.mkdir(parents=True)
    (gallery / "MODEL_CARD.md").write_text("# exp-1")
    manifest = await backup(js, first.db, tmp_path / "gallery", tmp_path / "backup", lambda _: None)
    assert manifest.stream_messages == manifest.stream_last_seq > 200
    assert "baselines" in manifest.collections

    js2 = await second.js()
    await restore(js2, second.db, tmp_path / "backup", lambda _: None)
    assert [m.data async for m in bus.read_stream(js2)] == [m.data async for m in bus.read_stream(js)]
    assert await project(js2, second.db) == before
    assert second.db.baselines.find_one({"_id": "smoke"})["val_loss_mean"] == pytest.approx(4.05)
    with pytest.raises(BackupError, match="already holds"):
        await restore(js2, second.db, tmp_path / "backup", lambda _: None)


async def test_missing_or_corrupt_backups_are_refused_and_change_nothing(
    stacks: tuple[Stack, Stack], tmp_path: Path
) -> None:
    first, second = stacks
    js = await first.js()
    for event in build_history(seed=6, experiments=5):
        await bus.publish(js, event)
    await backup(js, first.db, tmp_path / "none", tmp_path / "backup", lambda _: None)
    with pytest.raises(BackupError, match="does not exist"):
        verify(tmp_path / "nowhere")
    stream = tmp_path / "backup" / "stream.jsonl.gz"
    stream.write_bytes(gzip.compress(gzip.decompress(stream.read_bytes()).replace(b'"seq": 1,', b'"seq": 9,')))
    js2 = await second.js()
    with pytest.raises(BackupError, match=r"corrupt: stream\.jsonl\.gz"):
        await restore(js2, second.db, tmp_path / "backup", lambda _: None)
    assert (await bus.stream_bounds(js2))[2] == 0 and second.db.list_collection_names() == []


def test_the_cli_says_what_is_wrong(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli.main", "restore", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_up_work_backup_then_restore_into_a_new_data_dir_gives_the_same_memory(tmp_path: Path) -> None:
    """Through the CLI only, as a user walks it: the restored stack's memory has the same digests."""
    first, second = stack_env(tmp_path / "first"), stack_env(tmp_path / "second")
    assert asiarch(first, "up").returncode == 0
    try:
        state = StackState.read(tmp_path / "first")
        assert state is not None
        asyncio.run(publish_all(state.nats_url, [*build_history(seed=7, experiments=8), *baseline_events()]))
        notes = tmp_path / "notes.md"
        notes.write_text("# Gates\n\nGate the write.\n")
        assert asiarch(first, "cognition", "add", str(notes)).returncode == 0
        memory = f"http://127.0.0.1:{state.services['memory'].port}"
        wait_until_quiet(memory)
        before = httpx.get(f"{memory}/admin/digest", timeout=30).json()
        backed_up = asiarch(first, "backup", str(tmp_path / "backup"))
        assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    finally:
        asiarch(first, "down")
    restored = asiarch(second, "restore", str(tmp_path / "backup"))
    assert restored.returncode == 0 and "start it with `asiarch up`" in " ".join(restored.stdout.split())
    assert asiarch(second, "up").returncode == 0
    try:
        state = StackState.read(tmp_path / "second")
        assert state is not None
        memory = f"http://127.0.0.1:{state.services['memory'].port}"
        wait_until_quiet(memory)
        after = httpx.get(f"{memory}/admin/digest", timeout=30).json()
        assert after["collections"] == before["collections"] and after["indexes"] == before["indexes"]
        assert after["seq"] == before["seq"]
    finally:
        asiarch(second, "down")


async def publish_all(nats_url: str, events: list[object]) -> None:
    nc = await bus.connect(nats_url, "test")
    js = nc.jetstream()
    for event in events:
        await bus.publish(js, event)  # type: ignore[arg-type]
    await nc.close()


def wait_until_quiet(memory: str, timeout_s: float = 120) -> None:
    """Until memory's projection stops moving (it has applied everything in the stream)."""
    deadline, last = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        seq = httpx.get(f"{memory}/admin/digest", timeout=30).json()["seq"]["store"]
        if seq == last:
            return
        last = seq
        time.sleep(2)
    raise AssertionError("memory did not settle")
