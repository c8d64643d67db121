"""Connections for ``asiarch backup`` and ``asiarch restore``."""

from __future__ import annotations

from pathlib import Path

from pymongo import MongoClient

from shared import bus
from shared.backup import Manifest, Progress, backup, restore, verify
from shared.cli.stack import StackUnreachable, connect_nats
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


def checked_store(mongo_uri: str) -> MongoClient:
    client = mongo_client(mongo_uri)
    if not ping(client):
        client.close()
        raise StackUnreachable(f"the store at {mongo_uri} does not answer: start the stack first")
    return client
