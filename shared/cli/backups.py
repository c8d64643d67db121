"""Connections for ``asiarch backup`` and ``asiarch restore``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pymongo import MongoClient

from shared import bus
from shared.backup import Manifest, Progress, backup, restore, verify
from shared.cli.stack import Endpoints, StackSettings, StackUnreachable, connect_nats, endpoints, running_state
from shared.embedded import free_port, start_mongo, start_nats
from shared.store import mongo_client, ping


async def run_backup(nats_url: str, mongo_uri: str, database: str, gallery: Path, target: Path,
                     say: Progress) -> Manifest:
    nc = await connect_nats(nats_url, "asiarch-backup")
    client = checked_store(mongo_uri)
    try:
        return await backup(nc.jetstream(), client[database], gallery, target, say)
    finally:
        await nc.close()
        client.close()


async def run_restore(nats_url: str, mongo_uri: str, database: str, source: Path, say: Progress) -> Manifest:
    verify(source)  # a corrupt or missing backup is refused before anything is reached or touched
    nc = await connect_nats(nats_url, "asiarch-backup")
    client = checked_store(mongo_uri)
    try:
        js = nc.jetstream()
        await bus.ensure_stream(js, duplicate_window_s=6 * 3600)
        return await restore(js, client[database], source, say)
    finally:
        await nc.close()
        client.close()


@contextlib.contextmanager
def restore_target(data_dir: Path) -> Iterator[Endpoints]:
    """Where a restore goes: the stack running on ``data_dir``, the servers the settings name, or, when neither
    (a new data dir, nothing configured), the embedded NATS and store started just for the restore in the folders
    ``asiarch up`` will use, and stopped after it."""
    if running_state(data_dir) is not None or "ASIARCH_NATS_URL" in os.environ:
        yield endpoints(data_dir)
        return
    settings = StackSettings()
    nats = start_nats(data_dir, free_port())
    store = start_mongo(data_dir, free_port()) if settings.external_mongo_uri is None else None
    try:
        mongo_uri = settings.external_mongo_uri or f"mongodb://127.0.0.1:{store.port}"  # type: ignore[union-attr]
        yield Endpoints(f"nats://127.0.0.1:{nats.port}", mongo_uri, settings.mongo_db, settings.memory_url, data_dir)
    finally:
        for server in (store, nats):
            if server is not None:
                server.stop()


def checked_store(mongo_uri: str) -> MongoClient:
    client = mongo_client(mongo_uri)
    if not ping(client):
        client.close()
        raise StackUnreachable(f"the store at {mongo_uri} does not answer: start the stack first")
    return client
