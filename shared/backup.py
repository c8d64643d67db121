"""``asiarch backup`` / ``asiarch restore``: the event stream (the source of truth), the store, the gallery index.

A backup is a folder: ``stream.jsonl.gz`` (every message with its subject and id, in order), one
``store/<collection>.jsonl.gz`` per collection (MongoDB extended JSON, so dates and ids round-trip),
``gallery.json`` (what the gallery held), and ``manifest.json`` with the sha256 of each file. It is consistent as of
the stream's last sequence when it started: the store is a projection of the stream, and what it holds beyond
that point a replay recomputes.

Restore checks every file against the manifest before it changes anything, and only writes into an empty stack.
The store goes back first (the services' ledgers included, so no service redoes work it had done), then the stream.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bson import json_util
from nats.js import JetStreamContext
from pymongo.database import Database

from shared import bus
from shared.errors import AsiarchError
from shared.events import EventDecodeError, decode, utc_now

FORMAT = 1
MANIFEST = "manifest.json"
STREAM_FILE = "stream.jsonl.gz"
GALLERY_FILE = "gallery.json"
Progress = Callable[[str], None]


class BackupError(AsiarchError):
    code = "backup"


@dataclass
class Manifest:
    format: int
    created_at: str
    stream_last_seq: int
    stream_messages: int
    database: str
    collections: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_jsonl_gz(path: Path, lines: Iterator[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count


def read_jsonl_gz(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        yield from (line.rstrip("\n") for line in handle if line.strip())


# --- backup -----------------------------------------------------------------------------------------------------------


async def export_stream(js: JetStreamContext, path: Path) -> tuple[int, int]:
    """(last seq, messages) written; raw bytes are kept as they are, base64-encoded."""
    _, last, _ = await bus.stream_bounds(js)
    lines = []
    async for message in bus.read_stream(js, until_seq=last):
        lines.append(json.dumps({"seq": message.seq, "subject": message.subject,
                                 "data": base64.b64encode(message.data).decode()}))
    write_jsonl_gz(path, iter(lines))
    return last, len(lines)


def export_store(db: Database, folder: Path) -> dict[str, int]:
    counts = {}
    for name in sorted(db.list_collection_names()):
        docs = (json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS)
                for doc in db[name].find().sort("_id", 1))
        counts[name] = write_jsonl_gz(folder / f"{name}.jsonl.gz", docs)
    return counts


def gallery_index(gallery: Path) -> list[dict[str, Any]]:
    if not gallery.is_dir():
        return []
    return [{"experiment_id": entry.name,
             "files": {f.name: f.stat().st_size for f in sorted(entry.iterdir()) if f.is_file()}}
            for entry in sorted(gallery.iterdir()) if entry.is_dir()]


async def backup(js: JetStreamContext, db: Database, gallery: Path, target: Path, say: Progress) -> Manifest:
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: back up into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    say("exporting the event stream")
    last, messages = await export_stream(js, target / STREAM_FILE)
    say("exporting the store")
    collections = export_store(db, target / "store")
    (target / GALLERY_FILE).write_text(json.dumps(gallery_index(gallery), indent=1))
    files = {str(p.relative_to(target)): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()}
    manifest = Manifest(format=FORMAT, created_at=utc_now().isoformat(), stream_last_seq=last,
                        stream_messages=messages, database=db.name, collections=collections, files=files)
    (target / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


# --- restore ----------------------------------------------------------------------------------------------------------


def verify(source: Path) -> Manifest:
    """The manifest, after every file was checked against it; raises ``BackupError`` on any mismatch."""
    if not source.is_dir():
        raise BackupError(f"{source} is not a backup folder (it does not exist)")
    try:
        manifest = Manifest(**json.loads((source / MANIFEST).read_text()))
    except FileNotFoundError as exc:
        raise BackupError(f"{source} has no {MANIFEST}: not a backup, or an unfinished one") from exc
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{source / MANIFEST} is unreadable: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format} is not supported (this version reads {FORMAT})")
    for name, expected in manifest.files.items():
        path = source / name
        if not path.is_file():
            raise BackupError(f"the backup is incomplete: {name} is missing")
        if sha256_file(path) != expected:
            raise BackupError(f"the backup is corrupt: {name} does not match its checksum")
    if STREAM_FILE not in manifest.files:
        raise BackupError("the backup holds no event stream")
    return manifest


async def check_empty(js: JetStreamContext, db: Database) -> None:
    _, _, messages = await bus.stream_bounds(js)
    if messages:
        raise BackupError(f"the stream already holds {messages} messages: restore only into an empty stack")
    occupied = [name for name in db.list_collection_names() if db[name].estimated_document_count()]
    if occupied:
        raise BackupError(f"the store already holds data ({', '.join(sorted(occupied))}): restore into an empty stack")


def import_store(db: Database, source: Path, manifest: Manifest) -> None:
    for name in manifest.collections:
        docs = [json_util.loads(line) for line in read_jsonl_gz(source / "store" / f"{name}.jsonl.gz")]
        if docs:
            db[name].insert_many(docs, ordered=True)


async def import_stream(js: JetStreamContext, source: Path, say: Progress) -> int:
    restored = 0
    for line in read_jsonl_gz(source / STREAM_FILE):
        record = json.loads(line)
        data = base64.b64decode(record["data"])
        ack = await js.publish(record["subject"], data, headers={bus.MSG_ID_HEADER: message_id(data, record["seq"])})
        if ack.seq != record["seq"]:
            raise BackupError(f"message {record['seq']} was restored at sequence {ack.seq}: the stream is not fresh")
        restored += 1
        if restored % 1000 == 0:
            say(f"restored {restored} events")
    return restored


def message_id(data: bytes, seq: int) -> str:
    """The event's own id (so later re-publishes still de-duplicate against it), or one from its sequence."""
    try:
        return decode(data).event_id
    except EventDecodeError:
        return f"restored-{seq}"


async def restore(js: JetStreamContext, db: Database, source: Path, say: Progress) -> Manifest:
    manifest = verify(source)
    await check_empty(js, db)
    say("restoring the store")
    import_store(db, source, manifest)
    say("restoring the event stream")
    await import_stream(js, source, say)
    return manifest
