"""The FAISS projections: embedder contract, idempotent apply, persistence with the sequence, replay digests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.memory.vectors import (
    EVENT_INDEXES,
    MAX_WINDOWS,
    WINDOW_CHARS,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    VectorIndex,
    VectorStore,
    int_id,
    windows,
)
from shared.mixer.baselines import BASELINE_DIR
from tests.memory.history import build_history, cognition_event, numbered

HISTORY = numbered(build_history())

TEXTS = [
    "the loss became NaN after the exponential gate overflowed",
    "loss is NaN: the exponential gate overflowed at step 37",
    "a short depthwise convolution on keys sharpens local recall",
    "",
]


def _contract(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(TEXTS[:1])[0], vectors[0], atol=1e-5)  # batch-independent
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])  # related texts are closer
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_hashing_embedder_meets_the_contract() -> None:
    embedder = HashingEmbedder()
    assert isinstance(embedder, Embedder)
    _contract(embedder)


@pytest.mark.embedding
def test_minilm_embedder_meets_the_contract(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder) and minilm.dim == 384
    _contract(minilm)


@pytest.mark.embedding
def test_minilm_reads_a_whole_mixer_file_not_its_opening(minilm: MiniLMEmbedder) -> None:
    deltanet = BASELINE_DIR.joinpath("deltanet.py").read_text()
    opening = deltanet[:deltanet.index("def chunked_delta")]
    other = opening + "def chunked_delta_rule(q, k, v, beta, chunk_size):\n    return (k * v).cumsum(2) * q\n" * 8
    a, b, head = minilm.embed([deltanet, other, opening])
    assert float(a @ b) < 0.97  # one window each would make them the same text
    assert float(a @ head) < float(b @ head)  # the short one is mostly the shared opening


def test_windows_cover_the_text_at_line_ends() -> None:
    text = "".join(f"line {i:04d} " + "x" * 40 + "\n" for i in range(100))
    pieces = windows(text)
    assert "".join(pieces) == text and all(p.endswith("\n") for p in pieces)
    assert all(len(p) <= WINDOW_CHARS for p in pieces) and len(pieces) > 1
    assert len(windows("y" * WINDOW_CHARS * (MAX_WINDOWS + 5))) == MAX_WINDOWS
    assert windows("") == [""]


def test_int_ids_are_stable_across_processes() -> None:
    # A fixed value: the mapping must never depend on the process (Python's hash() is salted).
    assert int_id("camp-a-exp-001") == int_id("camp-a-exp-001") == 7999652239723334258
    assert 0 <= int_id("x") < 2**63


def test_apply_is_idempotent_and_replay_gives_identical_digests(vectors: VectorStore) -> None:
    for seq, event in HISTORY:
        assert vectors.apply(event, seq)
        assert not vectors.apply(event, seq)
    first = vectors.digest()
    assert vectors.last_seq() == len(HISTORY)
    proposals = sum(1 for _, e in HISTORY if type(e).__name__ == "ProposalCreated")
    assert vectors.size("motivations") == vectors.size("code") == proposals
    vectors.drop()
    assert vectors.last_seq() == 0 and vectors.size("code") == 0
    for seq, event in HISTORY:
        vectors.apply(event, seq)
    assert vectors.digest() == first


def test_saved_indexes_resume_after_restart(tmp_path: Path) -> None:
    half = len(HISTORY) // 2
    store = VectorStore(HashingEmbedder(), tmp_path)
    for seq, event in HISTORY[:half]:
        store.apply(event, seq)
    store.save()
    assert (tmp_path / "code.faiss").exists() and (tmp_path / "code.json").exists()
    restarted = VectorStore(HashingEmbedder(), tmp_path)
    assert restarted.last_seq() == half
    for seq, event in HISTORY[half - 10:]:  # a rewound consumer redelivers a few
        restarted.apply(event, seq)
    whole = VectorStore(HashingEmbedder())
    for seq, event in HISTORY:
        whole.apply(event, seq)
    assert restarted.digest() == whole.digest()


def test_a_torn_index_file_is_rebuilt_from_zero(tmp_path: Path) -> None:
    store = VectorStore(HashingEmbedder(), tmp_path)
    for seq, event in HISTORY[:50]:
        store.apply(event, seq)
    store.save()
    (tmp_path / "code.faiss").write_bytes(b"half a file")
    reloaded = VectorStore(HashingEmbedder(), tmp_path)
    assert reloaded.indexes["code"].seq == 0 and reloaded.size("code") == 0
    assert reloaded.indexes["motivations"].seq == 50
    assert reloaded.last_seq() == 0  # so the consumer replays from the start and code is rebuilt


def test_an_index_from_another_embedder_is_not_reused(tmp_path: Path) -> None:
    store = VectorStore(HashingEmbedder(), tmp_path)
    store.apply(HISTORY[1][1], HISTORY[1][0])
    store.save()
    index = VectorIndex.load(tmp_path, "code", 384, "all-MiniLM-L6-v2")
    assert index.seq == 0 and len(index) == 0


def test_search_finds_the_matching_failure(vectors: VectorStore) -> None:
    for seq, event in HISTORY:
        vectors.apply(event, seq)
    hits = vectors.search("failures", "loss is NaN at step 37 exponential overflow", k=3)
    assert hits and hits[0].id.count(":") == 1
    assert hits[0].score >= hits[-1].score
    with pytest.raises(KeyError, match="unknown index"):
        vectors.search("nope", "x")


def test_cognition_is_an_event_index_that_a_replay_rebuilds() -> None:
    assert "cognition" in EVENT_INDEXES
    vectors = VectorStore(HashingEmbedder())
    event = cognition_event(chunks=2)
    vectors.apply(event, 1)
    assert vectors.size("cognition") == 2
    vectors.drop()
    assert vectors.size("cognition") == 0 and vectors.last_seq() == 0
    vectors.apply(event, 1)
    assert vectors.size("cognition") == 2


def test_the_embedding_cache_returns_identical_vectors_and_survives_a_restart(tmp_path: Path) -> None:
    from services.memory.vectors import CachingEmbedder, HashingEmbedder

    class Counting(HashingEmbedder):
        calls = 0

        def embed(self, texts):  # type: ignore[no-untyped-def]
            Counting.calls += len(texts)
            return super().embed(texts)

    cache = CachingEmbedder(Counting(), tmp_path / "cache.npz")
    first = cache.embed(["gated delta rule", "chunked retention", "gated delta rule"])
    assert Counting.calls == 2 and first.shape == (3, cache.dim)
    cache.save()
    again = CachingEmbedder(Counting(), tmp_path / "cache.npz").embed(["chunked retention", "gated delta rule"])
    assert Counting.calls == 2  # nothing was embedded twice, not even across a restart
    assert (again == first[[1, 0]]).all()


def test_the_embedding_cache_of_another_embedder_is_not_used(tmp_path: Path) -> None:
    from services.memory.vectors import CachingEmbedder

    class Renamed(HashingEmbedder):
        name = "hashing/v2"

    old = CachingEmbedder(HashingEmbedder(), tmp_path / "cache.npz")
    old.embed(["gated delta rule"])
    old.save()
    assert len(CachingEmbedder(HashingEmbedder(), tmp_path / "cache.npz")._vectors) == 1
    assert CachingEmbedder(Renamed(), tmp_path / "cache.npz")._vectors == {}
