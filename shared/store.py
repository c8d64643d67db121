"""The store (MongoDB over the wire: the embedded nx-27017 or a real MongoDB 7) and the per-service ledger.

pymongo is synchronous; calls from the event loop go through ``asyncio.to_thread`` so a slow store never blocks
message heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.bus import Ledger
from shared.events import utc_now

LEDGER_COLLECTION = "processed"
# Per service and event: how many deliveries waited for the environment (see shared.errors.NotReady).
WAITS_COLLECTION = "waiting"


def mongo_client(uri: str, timeout_ms: int = 3000) -> MongoClient:
    return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True)


def ping(client: MongoClient) -> bool:
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    return True


class MongoLedger(Ledger):
    """``processed`` documents keyed ``<service>/<event_id>``: one per event a service finished."""

    def __init__(self, db: Database, service: str) -> None:
        self.collection = db[LEDGER_COLLECTION]
        self.service = service

    def _key(self, event_id: str) -> str:
        return f"{self.service}/{event_id}"

    async def seen(self, event_id: str) -> bool:
        doc = await asyncio.to_thread(self.collection.find_one, {"_id": self._key(event_id)}, {"_id": 1})
        return doc is not None

    async def record(self, event_id: str, stream_seq: int) -> None:
        doc = {"_id": self._key(event_id), "service": self.service, "seq": stream_seq, "at": utc_now()}
        # A duplicate key means another instance (or an earlier try of ours) finished it first: same outcome.
        with contextlib.suppress(DuplicateKeyError):
            await asyncio.to_thread(self.collection.insert_one, doc)

    async def waits(self, event_id: str) -> int:
        doc = await asyncio.to_thread(self.collection.database[WAITS_COLLECTION].find_one, {"_id": self._key(event_id)})
        return int(doc["count"]) if doc else 0

    async def add_wait(self, event_id: str) -> int:
        """One more wait; the document is replaced whole (one delivery at a time holds the event)."""
        count = await self.waits(event_id) + 1
        doc = {"_id": self._key(event_id), "service": self.service, "count": count, "at": utc_now()}
        await asyncio.to_thread(self.collection.database[WAITS_COLLECTION].replace_one, {"_id": doc["_id"]}, doc,
                                upsert=True)
        return count
