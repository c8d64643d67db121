"""Agent fixtures: the real memory API (in-process) over a real store, and a scripted LLM for prompt plumbing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.database import Database

from services.memory.api import MemoryApiDeps, create_router
from services.memory.projection import Projector
from services.memory.vectors import HashingEmbedder, VectorStore
from shared.events import Event
from shared.llm import Completion, LlmClient, Message
from shared.memory_client import MemoryClient
from shared.store import mongo_client


@dataclass
class ScriptedBackend:
    """Answers from a script of replies (dicts are sent as JSON), recording every conversation it was given."""

    replies: list[str | dict[str, Any]]
    model_name: str = "scripted"
    seen: list[list[Message]] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)

    async def chat(self, messages: list[Message], *, schema: dict[str, Any] | None, max_tokens: int,
                   temperature: float, seed: int | None = None) -> Completion:
        self.seen.append(list(messages))
        self.seeds.append(seed)
        self.temperatures.append(temperature)
        reply = self.replies.pop(0)
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return Completion(text=text, prompt_tokens=50, completion_tokens=len(text) // 4)


@dataclass
class MemoryWorld:
    db: Database
    projector: Projector
    vectors: VectorStore
    client: MemoryClient
    seq: int = 0

    def apply(self, *events: Event) -> None:
        for event in events:
            self.seq += 1
            self.projector.apply(event, self.seq)
            self.vectors.apply(event, self.seq)


@pytest.fixture
async def world(mongo_uri: str) -> AsyncIterator[MemoryWorld]:
    db = mongo_client(mongo_uri)["agents"]
    vectors = VectorStore(HashingEmbedder())
    app = FastAPI()
    app.include_router(create_router(MemoryApiDeps(db=db, vectors=vectors)))
    client = MemoryClient("http://memory", transport=httpx.ASGITransport(app=app))
    yield MemoryWorld(db=db, projector=Projector(db), vectors=vectors, client=client)
    await client.aclose()


def scripted(*replies: str | dict[str, Any]) -> tuple[LlmClient, ScriptedBackend]:
    backend = ScriptedBackend(list(replies))
    return LlmClient(backend, "test"), backend
