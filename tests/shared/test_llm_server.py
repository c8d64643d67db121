"""The stack's LLM server: llama.cpp's own server on the real default model, spoken to through the agents' client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded import free_port, stop_process_group
from shared.errors import NotReady
from shared.llm import DEFAULT_MODEL, LlmClient, LlmUnavailable, OpenAICompatibleBackend
from shared.llm_server import (
    LlmServerSettings,
    server_binary,
    server_stats,
    server_url,
    set_served_model,
    spawn_llm_server,
    wait_until_serving,
)
from shared.models import pull

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "layers": {"type": "integer"}},
    "required": ["name", "layers"],
}
# Long enough that a cached prefix is worth measuring: the agents' prompts open with their fixed instructions.
INSTRUCTIONS = "You name neural network designs. " + " ".join(
    f"Rule {i}: a name is short, lower case and joined by hyphens." for i in range(40))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = LlmServerSettings(llm_threads=1, llm_slots=2, llm_ctx=2048)
    if server_binary(settings) is None:
        pytest.skip("llama-server is not installed: run `make install`")
    pull(settings.models_dir, DEFAULT_MODEL)  # a no-op once pulled
    data_dir = tmp_path_factory.mktemp("llm")
    set_served_model(data_dir, DEFAULT_MODEL)
    port = free_port()
    proc = spawn_llm_server(data_dir, port, settings)
    url = server_url(port)
    try:
        wait_until_serving(url, DEFAULT_MODEL, timeout_s=120)
        yield url
    finally:
        stop_process_group(proc)


def ask(url: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": question}]


async def test_schema_reply_through_the_agents_client_and_the_prefix_is_cached(served: str) -> None:
    client = LlmClient(OpenAICompatibleBackend(served, DEFAULT_MODEL), "test")
    first = await client.complete_json(ask(served, "Name a gated linear attention with 4 layers."), SCHEMA,
                                       max_tokens=60, temperature=0.0, seed=1)
    assert isinstance(first.data["name"], str) and isinstance(first.data["layers"], int)
    second = await client.complete_json(ask(served, "Name a chunked delta rule with 6 layers."), SCHEMA,
                                        max_tokens=60, temperature=0.0, seed=1)
    # The shared system prompt is not evaluated again.
    assert second.usage.cached_prompt_tokens >= 300, second.usage
    assert second.usage.prompt_tokens > second.usage.cached_prompt_tokens
    stats = server_stats(served)
    assert stats is not None and stats.model == DEFAULT_MODEL
    assert stats.completion_tokens > 0 and stats.prompt_tokens_per_s > 0 and stats.completion_tokens_per_s > 0


async def test_concurrent_agents_are_served_side_by_side(served: str) -> None:
    client = LlmClient(OpenAICompatibleBackend(served, DEFAULT_MODEL), "test")
    replies = await asyncio.gather(*(client.complete_json(ask(served, f"Name a mixer with {n} layers."), SCHEMA,
                                                          max_tokens=40, temperature=0.0, seed=n)
                                     for n in (2, 3, 5)))
    assert [isinstance(r.data["layers"], int) for r in replies] == [True] * 3


async def test_a_server_that_is_not_there_is_an_environment_fault(tmp_path: Path) -> None:
    backend = OpenAICompatibleBackend(server_url(free_port()), DEFAULT_MODEL)
    with pytest.raises(LlmUnavailable, match="does not answer") as caught:
        await backend.chat([{"role": "user", "content": "hi"}], schema=None, max_tokens=4, temperature=0.0)
    assert isinstance(caught.value, NotReady)  # the work waits for it instead of failing
    await backend.aclose()
