"""The LLM client's plumbing with a scripted backend (the real model is exercised end to end elsewhere)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from shared.llm import (
    Completion,
    LlmClient,
    LlmSettings,
    MalformedOutput,
    Message,
    exclusive,
    parse_json_reply,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["name", "score"],
}


@dataclass
class ScriptedBackend:
    """Replies from a script, recording what it was asked."""

    replies: list[str]
    model_name: str = "scripted"
    seen: list[list[Message]] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)

    async def chat(self, messages: list[Message], *, schema: dict[str, Any] | None, max_tokens: int,
                   temperature: float, seed: int | None = None) -> Completion:
        self.seen.append(list(messages))
        self.seeds.append(seed)
        return Completion(text=self.replies.pop(0), prompt_tokens=100, completion_tokens=20)


async def test_valid_reply_is_parsed_and_counted() -> None:
    client = LlmClient(ScriptedBackend(['{"name": "gla", "score": 7}']), "test")
    reply = await client.complete_json([{"role": "user", "content": "hi"}], SCHEMA)
    assert reply.data == {"name": "gla", "score": 7}
    assert reply.attempts == 1
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.model) == (100, 20, "scripted")


async def test_malformed_reply_is_retried_with_the_error_shown() -> None:
    backend = ScriptedBackend(['{"name": "gla"', '{"name": "gla"}', '{"name": "gla", "score": 3}'])
    reply = await LlmClient(backend, "test").complete_json([{"role": "user", "content": "hi"}], SCHEMA)
    assert reply.attempts == 3 and reply.usage.prompt_tokens == 300
    assert "not valid JSON" in backend.seen[1][-1]["content"]
    assert "missing required field 'score'" in backend.seen[2][-1]["content"]


async def test_attempts_run_out() -> None:
    client = LlmClient(ScriptedBackend(["nope"] * 2), "test", max_attempts=2)
    with pytest.raises(MalformedOutput, match="after 2 attempts"):
        await client.complete_json([{"role": "user", "content": "hi"}], SCHEMA)


async def test_validator_rejections_are_retried() -> None:
    def no_zero(data: dict[str, Any]) -> None:
        if data["score"] == 0:
            raise MalformedOutput("score must not be 0")

    backend = ScriptedBackend(['{"name": "a", "score": 0}', '{"name": "a", "score": 1}'])
    reply = await LlmClient(backend, "test").complete_json([], SCHEMA, validate=no_zero)
    assert reply.data["score"] == 1 and "must not be 0" in backend.seen[1][-1]["content"]


def test_parse_accepts_fences_and_raw_newlines_in_strings() -> None:
    text = '```json\n{"name": "line one\nline two", "score": 2}\n```'
    assert parse_json_reply(text, SCHEMA)["name"] == "line one\nline two"


@pytest.mark.parametrize("text", ['["a"]', '{"name": 1, "score": 2}', '{"name": "a", "score": "2"}'])
def test_parse_rejects_wrong_shapes(text: str) -> None:
    with pytest.raises(MalformedOutput):
        parse_json_reply(text, SCHEMA)


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from shared.llm import exclusive
with exclusive(Path(sys.argv[1])):
    print(time.monotonic())
    time.sleep(0.4)
    print(time.monotonic())
"""


def test_in_process_inference_takes_turns_across_processes(tmp_path: Path) -> None:
    lock = tmp_path / "models" / ".inference.lock"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(lock)], cwd=root, stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    spans = sorted(tuple(float(v) for v in proc.communicate(timeout=60)[0].split()) for proc in procs)
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(spans))
    assert LlmSettings(models_dir=tmp_path).host_lock() == tmp_path / ".inference.lock"
    assert LlmSettings(models_dir=tmp_path, llm_one_at_a_time=False).host_lock() is None
    with exclusive(None):
        pass  # no lock asked for: nothing to hold
