"""Memory's handlers: every domain event is applied to the projections in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.bus import Delivery
from shared.events import Event, encode

EVENT_LOG = "event_log"


class EventLogProjection:
    """One document per event, keyed by its id and carrying its stream sequence.

    The insert is the whole effect and the id is unique, so an event applied twice is stored once.
    """

    name = "event_log"

    def __init__(self, db: Database) -> None:
        self.collection = db[EVENT_LOG]

    def apply(self, event: Event, seq: int) -> bool:
        doc = {
            "_id": event.event_id,
            "seq": seq,
            "type": type(event).type_tag(),
            "campaign_id": event.campaign_id,
            "experiment_id": event.experiment_id,
            "occurred_at": event.occurred_at,
            "size": len(encode(event)),
        }
        try:
            self.collection.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True


async def project(projection: EventLogProjection, event: Event, delivery: Delivery) -> Sequence[Event]:
    await asyncio.to_thread(projection.apply, event, delivery.stream_seq)
    return ()
