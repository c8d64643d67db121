"""The cognition base: the shipped starter entries, and reading Markdown, text and PDF (with page numbers) into
``cognition.added`` events, projected into the store and the index."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.database import Database

from services.memory.cognition import (
    COGNITION,
    IngestReport,
    cognition_events,
    load_starter,
    read_sources,
    starter_update,
)
from services.memory.cognition.ingest import ENTRY_FIELDS, MAX_DOCS_PER_EVENT, SourceUpdate, chunk_text
from services.memory.projection import Projector
from services.memory.vectors import MiniLMEmbedder, VectorStore
from tests.memory.history import apply_updates


def ingest(path: Path, db: Database, vectors: VectorStore) -> IngestReport:
    """What ``cognition add`` does: read the files, publish their events, project them."""
    updates, report = read_sources(path, lambda source: [d["_id"] for d in db[COGNITION].find({"source": source})])
    apply_updates(updates, Projector(db), vectors)
    return report


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page, written by hand (no PDF writer needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        page_no, content_no = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_no} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R "
                       f"/Resources << /Font << /F1 {len(pages) * 2 + 3} 0 R >> >> >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_starter_has_at_least_40_complete_entries() -> None:
    entries = load_starter()
    assert len(entries) >= 40
    assert len({e.id for e in entries}) == len(entries)
    for entry in entries:
        for name in ENTRY_FIELDS:
            assert len(getattr(entry, name).strip()) > 20 or name == "title", (entry.id, name)
    titles = " ".join(e.title for e in entries).lower()
    for topic in ("performer", "cosformer", "retnet", "gated linear attention", "rwkv", "hgrn", "mamba",
                  "deltanet", "gated deltanet", "based", "hyena", "xlstm", "ttt", "titans", "longhorn", "s4",
                  "h3", "lightning", "gateloop", "aaren", "hedgehog", "deltaproduct"):
        assert topic in titles, topic


def test_the_starter_events_are_idempotent(db: Database, vectors: VectorStore) -> None:
    update = starter_update()
    apply_updates([update], Projector(db), vectors)
    count = len(update.docs)
    assert db[COGNITION].count_documents({"kind": "starter"}) == count == vectors.size("cognition")
    def content() -> list[tuple[str, bytes]]:
        return [(i, v.tobytes()) for i, v in vectors.indexes["cognition"].vectors_by_id()]

    before = content()
    apply_updates([update], Projector(db), vectors)  # published again (a restart): the same base
    assert db[COGNITION].count_documents({}) == count and content() == before
    assert [e.event_id for e in cognition_events(update, "memory")] == [
        e.event_id for e in cognition_events(starter_update(), "memory")]  # the bus drops the repeat
    doc = db[COGNITION].find_one({"_id": "starter:deltanet"})
    assert doc is not None and doc["symptoms"] and doc["implementation"] and doc["source"].startswith("starter/")


def test_chunking_respects_the_limit_and_keeps_words() -> None:
    text = "\n\n".join(["short paragraph."] * 3 + ["word " * 700])
    chunks = chunk_text(text, max_chars=500, overlap=50)
    assert all(len(c) <= 500 for c in chunks) and chunks[0].startswith("short paragraph.")
    assert all(not c.startswith("ord") for c in chunks)


def test_markdown_and_text_ingest(tmp_path: Path, db: Database, vectors: VectorStore) -> None:
    (tmp_path / "notes.md").write_text("# Decay\n\nUse a per-head decay.\n\n## Gates\n\nGate the state.\n")
    (tmp_path / "plain.txt").write_text("First paragraph.\n\nSecond paragraph.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    report = ingest(tmp_path, db, vectors)
    assert report.files == 2 and report.chunks == 3
    titles = sorted(d["title"] for d in db[COGNITION].find())
    assert titles == ["Decay", "Gates", "plain"]
    assert vectors.search("cognition", "gate the state", k=1)[0].id in {d["_id"] for d in db[COGNITION].find(
        {"title": "Gates"})}
    (tmp_path / "notes.md").write_text("# Decay\n\nRewritten.\n")  # re-adding an edited file replaces its chunks
    ingest(tmp_path / "notes.md", db, vectors)
    assert sorted(d["title"] for d in db[COGNITION].find()) == ["Decay", "plain"]
    assert vectors.size("cognition") == 2


def test_pdf_ingest_keeps_page_numbers(tmp_path: Path, db: Database, vectors: VectorStore) -> None:
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(minimal_pdf(["Chunkwise training splits the sequence.", "The delta rule corrects errors.",
                                 "Short convolutions help recall."]))
    report = ingest(pdf, db, vectors)
    assert report.files == 1 and report.chunks == 3
    pages = {d["page"]: d["text"] for d in db[COGNITION].find({"source": str(pdf.resolve())})}
    assert sorted(pages) == [1, 2, 3] and "delta rule" in pages[2]
    hit = vectors.search("cognition", "delta rule corrects errors", k=1)[0]
    assert db[COGNITION].find_one({"_id": hit.id})["page"] == 2


def test_a_long_source_is_split_across_events_and_its_removals_go_first() -> None:
    docs = starter_update().docs
    many = tuple(docs[i % len(docs)] for i in range(MAX_DOCS_PER_EVENT + 5))
    events = cognition_events(SourceUpdate(source="long", docs=many, removed_ids=("old:1",)), "memory")
    assert [len(e.docs) for e in events] == [MAX_DOCS_PER_EVENT, 5]
    assert events[0].removed_ids == ("old:1",) and events[1].removed_ids == ()


def test_ingest_of_a_missing_path_is_clear(tmp_path: Path, db: Database, vectors: VectorStore) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        ingest(tmp_path / "absent.pdf", db, vectors)
    (tmp_path / "x.docx").write_text("?")
    assert "supported types" in ingest(tmp_path / "x.docx", db, vectors).skipped[0]


@pytest.fixture(scope="module")
def starter_store(module_db: Database, minilm: MiniLMEmbedder) -> VectorStore:
    store = VectorStore(minilm)
    apply_updates([starter_update()], Projector(module_db), store)
    return store


@pytest.mark.embedding
@pytest.mark.parametrize(("symptom", "expected"), [
    ("causality check fails after adding an FFT long convolution", {"fft-causality", "causal-reductions", "hyena"}),
    ("training is slow, a python for loop over every token times out", {"python-loops", "chunkwise-form",
                                                                        "parallel-scan"}),
    ("delta rule state explodes and the loss becomes NaN", {"qk-l2-norm", "numerics-nan", "deltanet",
                                                            "log-space-decay"}),
])
def test_starter_retrieval_by_symptom_with_minilm(starter_store: VectorStore, symptom: str,
                                                  expected: set[str]) -> None:
    top = {hit.id.removeprefix("starter:") for hit in starter_store.search("cognition", symptom, k=3)}
    assert top & expected, top
