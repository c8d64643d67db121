"""Fixtures for the memory tests: a database on the real nx-27017 server and vector stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymongo.database import Database

from services.memory.vectors import HashingEmbedder, MiniLMEmbedder, VectorStore
from shared.embedded import free_port, start_mongo
from shared.store import mongo_client


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedding: loads the real MiniLM model (a few seconds)")


@pytest.fixture
def db(mongo_uri: str) -> Iterator[Database]:
    client = mongo_client(mongo_uri)
    yield client["memory_test"]
    client.close()


@pytest.fixture
def vectors() -> VectorStore:
    """Projection mechanics do not need real embeddings: the hashing embedder is exact and instant."""
    return VectorStore(HashingEmbedder())


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """One model load per test session."""
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def module_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A real nx-27017 server shared by one module's read-only tests (projecting the history once is ~2 s)."""
    server = start_mongo(tmp_path_factory.mktemp("mongo"), free_port())
    client = mongo_client(f"mongodb://{server.host}:{server.port}")
    yield client["memory_test"]
    client.close()
    server.stop()
