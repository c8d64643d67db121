"""Ingest papers and notes (PDF, Markdown, text) and the shipped starter base into the cognition store.

Each piece becomes a document of the ``cognition`` collection (source path, page for PDFs, chunk number, text) and
a vector in the ``cognition`` FAISS index under the same id. Ids are derived from the file's content hash, so
adding the same file twice stores it once, and re-adding an edited file replaces its old chunks.

Cognition does not come from events (the catalogue has no event for it), so a replay keeps it; ``ingest_starter``
rebuilds the shipped part on any fresh store.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from services.memory.vectors import COGNITION_INDEX, VectorStore

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


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    title: str
    page: int | None
    chunk: int
    text: str


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


def chunks_of(path: Path) -> list[Chunk]:
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
    return [Chunk(id=f"doc:{digest}:{n}", source=source, title=title, page=page, chunk=n, text=text)
            for n, (title, page, text) in enumerate(pieces)]


# --- storing ------------------------------------------------------------------------------------------------------


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return [path]


def _store(db: Database, vectors: VectorStore, docs: Sequence[dict[str, Any]], texts: Sequence[str]) -> None:
    if docs:
        db[COGNITION].bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=True)
        vectors.put(COGNITION_INDEX, [(d["_id"], t) for d, t in zip(docs, texts, strict=True)])


def ingest(path: Path, db: Database, vectors: VectorStore) -> IngestReport:
    """Ingest a file, or every PDF/Markdown/text file under a folder; then embed and save the index."""
    report = IngestReport()
    for file in _files(Path(path)):
        try:
            chunks = chunks_of(file)
        except ValueError as exc:
            report.skipped.append(str(exc))
            continue
        stale = [d["_id"] for d in db[COGNITION].find({"source": str(file.resolve())}, {"_id": 1})]
        keep = {c.id for c in chunks}
        gone = [i for i in stale if i not in keep]
        if gone:
            db[COGNITION].delete_many({"_id": {"$in": gone}})
            vectors.remove(COGNITION_INDEX, gone)
        docs = [{"_id": c.id, "kind": "document", **{k: v for k, v in asdict(c).items() if k != "id"}}
                for c in chunks]
        _store(db, vectors, docs, [f"{c.title}\n{c.text}" for c in chunks])
        report.files += 1
        report.chunks += len(chunks)
    _persist(vectors)
    return report


def _persist(vectors: VectorStore) -> None:
    if vectors.directory is not None:
        vectors.save()
    else:
        vectors.flush()


# --- the starter base ---------------------------------------------------------------------------------------------


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


def ingest_starter(db: Database, vectors: VectorStore, path: Path = STARTER_FILE) -> int:
    """Store and index the starter base (idempotent); returns the number of entries."""
    entries = load_starter(path)
    docs = [{"_id": f"starter:{e.id}", "kind": "starter", "source": f"starter/{path.name}", "page": None,
             "chunk": 0, "text": e.as_text(), **{k: v for k, v in asdict(e).items() if k != "id"}}
            for e in entries]
    for doc in docs:
        doc["tags"] = list(doc["tags"])
    _store(db, vectors, docs, [e.retrieval_text() for e in entries])
    _persist(vectors)
    return len(entries)
