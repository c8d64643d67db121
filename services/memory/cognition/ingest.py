"""Read papers and notes (PDF, Markdown, text) and the shipped starter base into ``cognition.added`` events.

Each piece becomes a document of the ``cognition`` collection (source path, page for PDFs, chunk number, text) and
a vector in the ``cognition`` FAISS index under the same id. Ids are derived from the file's content hash, so
adding the same file twice stores it once, and re-adding an edited file replaces its old chunks.

Nothing here writes the store: memory publishes what is read as ``cognition.added`` and its projection stores
and indexes it like any other event, so a replay of the log rebuilds the cognition base exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from shared.events import CognitionAdded, CognitionDoc, derived_event_id, utc_now

COGNITION = "cognition"
STARTER_FILE = Path(__file__).parent / "starter" / "entries.jsonl"
SUFFIXES: dict[str, str] = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
# MiniLM reads at most 256 word pieces (~1,000 characters of prose); longer chunks would be cut silently.
MAX_CHUNK_CHARS = 1000
CHUNK_OVERLAP_CHARS = 150
ENTRY_FIELDS: tuple[str, ...] = ("title", "insight", "symptoms", "background", "idea", "implementation")


@dataclass(frozen=True)
class CognitionEntry:
    """One curated piece of design knowledge; ``symptoms`` is what retrieval matches against."""

    id: str
    title: str
    insight: str
    symptoms: str
    background: str
    idea: str
    implementation: str
    tags: tuple[str, ...] = ()

    def retrieval_text(self) -> str:
        return f"{self.title}. {self.symptoms} {self.insight}"

    def as_text(self) -> str:
        return (f"# {self.title}\n\nInsight: {self.insight}\n\nSymptoms: {self.symptoms}\n\n"
                f"Background: {self.background}\n\nIdea: {self.idea}\n\nImplementation: {self.implementation}")


@dataclass
class IngestReport:
    files: int = 0
    chunks: int = 0
    skipped: list[str] = field(default_factory=list)


# --- reading ------------------------------------------------------------------------------------------------------


def chunk_text(text: str, max_chars: int = MAX_CHUNK_CHARS, overlap: int = CHUNK_OVERLAP_CHARS) -> list[str]:
    """Pack paragraphs into chunks of at most ``max_chars``; a longer paragraph is cut into overlapping windows."""
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    chunks: list[str] = []
    current = ""
    for paragraph in filter(None, paragraphs):
        if len(paragraph) > max_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(_windows(paragraph, max_chars, overlap))
        elif len(current) + len(paragraph) + 2 > max_chars:
            chunks.append(current)
            current = paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


def _windows(text: str, size: int, overlap: int) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            # End on a word boundary where one is near, so no chunk starts or ends mid-word.
            space = text.rfind(" ", start + size // 2, end)
            end = space if space > 0 else end
        yield text[start:end].strip()
        if end >= len(text):
            return
        start = max(end - overlap, start + 1)


def read_pdf(path: Path) -> list[tuple[int, str]]:
    """(1-based page number, text) for each page with text."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    pages = [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
    return [(number, text) for number, text in pages if text.strip()]


def read_markdown(text: str, default_title: str) -> list[tuple[str, str]]:
    """(heading, body) sections; text before the first heading goes under ``default_title``."""
    sections: list[tuple[str, str]] = []
    title, lines = default_title, []
    for line in text.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*\S)\s*$", line)
        if heading:
            if "".join(lines).strip():
                sections.append((title, "\n".join(lines)))
            title, lines = heading.group(1), []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append((title, "\n".join(lines)))
    return sections


def chunks_of(path: Path) -> list[CognitionDoc]:
    """Split one file into chunks; raises ValueError for a type it cannot read."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot ingest {path.name}: supported types are {', '.join(sorted(SUFFIXES))}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    source, name = str(path.resolve()), path.stem
    pieces: list[tuple[str, int | None, str]] = []
    if kind == "pdf":
        pieces = [(name, page, part) for page, text in read_pdf(path) for part in chunk_text(text)]
    elif kind == "markdown":
        sections = read_markdown(path.read_text(encoding="utf-8", errors="replace"), name)
        pieces = [(title, None, part) for title, body in sections for part in chunk_text(body)]
    else:
        pieces = [(name, None, part) for part in chunk_text(path.read_text(encoding="utf-8", errors="replace"))]
    return [CognitionDoc(id=f"doc:{digest}:{n}", kind="document", source=source, title=title, page=page, chunk=n,
                         text=text, retrieval_text=f"{title}\n{text}") for n, (title, page, text) in enumerate(pieces)]


# --- what a file or the starter base adds --------------------------------------------------------------------------


# A cognition.added event stays well under the bus's 1 MiB message limit at ~1 KB a chunk.
MAX_DOCS_PER_EVENT = 200


@dataclass(frozen=True)
class SourceUpdate:
    """What one source adds to the cognition base (split into several events when it is long), and which of its
    earlier chunks go."""

    source: str
    docs: tuple[CognitionDoc, ...]
    removed_ids: tuple[str, ...] = ()

    def batches(self) -> list[tuple[tuple[CognitionDoc, ...], tuple[str, ...]]]:
        cut = [self.docs[i:i + MAX_DOCS_PER_EVENT] for i in range(0, len(self.docs), MAX_DOCS_PER_EVENT)] or [()]
        return [(docs, self.removed_ids if n == 0 else ()) for n, docs in enumerate(cut)]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return [path]


def read_sources(path: Path, known_ids: Callable[[str], Sequence[str]]) -> tuple[list[SourceUpdate], IngestReport]:
    """What a file, or every PDF/Markdown/text file under a folder, adds; ``known_ids(source)`` names the chunks
    the base holds for that source now, so the ones its new version lacks are removed."""
    report, updates = IngestReport(), []
    for file in _files(Path(path)):
        try:
            docs = chunks_of(file)
        except ValueError as exc:
            report.skipped.append(str(exc))
            continue
        source = str(file.resolve())
        keep = {d.id for d in docs}
        gone = tuple(i for i in known_ids(source) if i not in keep)
        updates.append(SourceUpdate(source=source, docs=tuple(docs), removed_ids=gone))
        report.files += 1
        report.chunks += len(docs)
    return updates, report


def load_starter(path: Path = STARTER_FILE) -> list[CognitionEntry]:
    """The shipped entries; raises ValueError naming the line of a malformed one."""
    entries: list[CognitionEntry] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        raw = json.loads(line)
        missing = [f for f in ("id", *ENTRY_FIELDS) if not str(raw.get(f, "")).strip()]
        if missing:
            raise ValueError(f"{path.name}:{number}: missing {', '.join(missing)}")
        entries.append(CognitionEntry(**{**raw, "tags": tuple(raw.get("tags", ()))}))
    return entries


def starter_update(path: Path = STARTER_FILE) -> SourceUpdate:
    """The shipped starter base as one source."""
    source = f"starter/{path.name}"
    docs = tuple(CognitionDoc(id=f"starter:{e.id}", kind="starter", source=source, title=e.title, text=e.as_text(),
                              retrieval_text=e.retrieval_text(), insight=e.insight, symptoms=e.symptoms,
                              background=e.background, idea=e.idea, implementation=e.implementation, tags=e.tags)
                 for e in load_starter(path))
    return SourceUpdate(source=source, docs=docs)


def source_digest(update: SourceUpdate) -> str:
    """Names a source's content: the same content added twice gets the same event ids, so the bus keeps one."""
    hasher = hashlib.sha256(update.source.encode())
    for doc in update.docs:
        hasher.update(doc.id.encode())
    for removed in update.removed_ids:
        hasher.update(b"-" + removed.encode())
    return hasher.hexdigest()[:32]


def as_document(doc: CognitionDoc) -> dict[str, Any]:
    """The ``cognition`` collection's document for one entry (its ``_id`` is the entry's id)."""
    fields = msgspec.structs.asdict(doc)
    fields.pop("retrieval_text")
    fields["_id"] = fields.pop("id")
    fields["tags"] = list(fields["tags"])
    return fields


def cognition_events(update: SourceUpdate, producer: str) -> list[CognitionAdded]:
    """The ``cognition.added`` events of one source; their ids derive from its content (see ``source_digest``)."""
    digest = source_digest(update)
    return [CognitionAdded(event_id=derived_event_id(digest, producer, n), occurred_at=utc_now(), producer=producer,
                           campaign_id="", source=update.source, docs=docs, removed_ids=removed)
            for n, (docs, removed) in enumerate(update.batches())]
