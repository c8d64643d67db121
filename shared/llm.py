"""The LLM client: one interface, two backends (any OpenAI-compatible endpoint, the stack's LLM server among them;
llama.cpp in-process).

Agents ask for JSON under a JSON schema; the client parses it, checks the schema's required fields and types, and
on malformed output retries with the parse error shown to the model. Token counts and latency are measured and
counted in the metrics. Small local models write raw newlines inside JSON strings, so parsing is not strict.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import Field

from shared import metrics
from shared.errors import AsiarchError, NotReady
from shared.events import LlmUsage
from shared.settings import CommonSettings

Message = dict[str, str]
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
}


class LlmError(AsiarchError):
    code = "llm"


class MalformedOutput(LlmError):
    code = "llm_malformed"


class LlmUnavailable(LlmError, NotReady):
    """The LLM server does not answer or is still loading its model: the work waits for it, it is nobody's fault."""

    code = "llm_unavailable"


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0


def add_usage(*usages: LlmUsage) -> LlmUsage:
    """The usage of several calls of one task, as one."""
    return LlmUsage(model=usages[-1].model, prompt_tokens=sum(u.prompt_tokens for u in usages),
                    completion_tokens=sum(u.completion_tokens for u in usages),
                    latency_s=round(sum(u.latency_s for u in usages), 3),
                    cached_prompt_tokens=sum(u.cached_prompt_tokens for u in usages))


class LlmBackend(Protocol):
    model_name: str

    async def chat(
        self, messages: list[Message], *, schema: dict[str, Any] | None, max_tokens: int, temperature: float,
        seed: int | None = None,
    ) -> Completion: ...


@dataclass(frozen=True)
class LlmReply:
    data: dict[str, Any]
    usage: LlmUsage
    attempts: int


def parse_json_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The reply as a dict that has the schema's required fields with the right top-level types."""
    cleaned = text.strip()
    if cleaned.startswith("```"):
        cleaned = cleaned.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(cleaned, strict=False)
    except json.JSONDecodeError as exc:
        raise MalformedOutput(f"not valid JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(data, dict):
        raise MalformedOutput(f"expected a JSON object, got {type(data).__name__}")
    properties = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in data:
            raise MalformedOutput(f"missing required field '{key}'")
        expected = JSON_TYPES.get(properties.get(key, {}).get("type", ""))
        if expected is not None and not isinstance(data[key], expected):
            raise MalformedOutput(f"field '{key}' should be {properties[key]['type']}")
    return data


@dataclass(frozen=True)
class Exchange:
    """One request as it was sent and its reply, kept while a task is recorded (``LlmClient.recording``)."""

    messages: tuple[Message, ...]
    reply: str
    json: bool


# The exchanges of the task running in this asyncio task (None: not recorded). A context variable, so concurrent
# tasks of one agent each record their own.
_RECORDING: ContextVar[list[Exchange] | None] = ContextVar("llm_recording", default=None)


@contextmanager
def recording() -> Iterator[list[Exchange]]:
    """Every request made inside the block, with its reply, in order."""
    exchanges: list[Exchange] = []
    token = _RECORDING.set(exchanges)
    try:
        yield exchanges
    finally:
        _RECORDING.reset(token)


class LlmClient:
    """Schema-constrained JSON completions with retries and accounting."""

    def __init__(self, backend: LlmBackend, service: str, max_attempts: int = 3,
                 factory: Callable[[str], LlmBackend] | None = None) -> None:
        self.backends = {backend.model_name: backend}
        self.model = backend.model_name
        self.service = service
        self.max_attempts = max_attempts
        self.factory = factory
        # The model of the asyncio task running now, where it named one: concurrent tasks of one agent may serve
        # campaigns that name different models.
        self.task_model: ContextVar[str | None] = ContextVar(f"llm_model_{id(self)}", default=None)

    def use_model(self, model: str) -> None:
        """Switch every task without a model of its own to ``model`` (a campaign names its own)."""
        self.model = model

    def use_model_in_task(self, model: str) -> None:
        """Speak with ``model`` in this asyncio task and the tasks it starts, whatever the others use."""
        self.task_model.set(model)

    @property
    def backend(self) -> LlmBackend:
        """The backend of the current task's model; one is built per model, on first use (the in-process one
        loads it on its first call)."""
        model = self.task_model.get() or self.model
        if model not in self.backends:
            if self.factory is None:
                return self.backends[next(iter(self.backends))]
            self.backends[model] = self.factory(model)
        return self.backends[model]

    async def complete_json(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        validate: Callable[[dict[str, Any]], None] | None = None,
        seed: int | None = None,
    ) -> LlmReply:
        """Ask until the reply parses (and ``validate`` accepts it) or attempts run out (``MalformedOutput``)."""
        conversation = list(messages)
        completions: list[Completion] = []
        started = time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            completion = await self.timed_chat(conversation, schema, max_tokens, temperature,
                                               None if seed is None else seed + attempt)
            completions.append(completion)
            try:
                data = parse_json_reply(completion.text, schema)
                if validate is not None:
                    validate(data)
            except MalformedOutput as exc:
                metrics.LLM_FAILURES.labels(self.service, "malformed").inc()
                conversation += [
                    {"role": "assistant", "content": completion.text[:4000]},
                    {"role": "user", "content": f"That reply was rejected: {exc}. Answer again with only the JSON."},
                ]
                continue
            return LlmReply(data=data, usage=self.usage(completions, started), attempts=attempt)
        raise MalformedOutput(f"no acceptable reply after {self.max_attempts} attempts")

    async def complete_text(
        self, messages: list[Message], *, max_tokens: int = 2048, temperature: float = 0.7, seed: int | None = None
    ) -> tuple[str, LlmUsage]:
        """Free text (no grammar): for code, which small models cannot reliably escape inside a JSON string."""
        started = time.perf_counter()
        completion = await self.timed_chat(messages, None, max_tokens, temperature, seed)
        return completion.text, self.usage([completion], started)

    def usage(self, completions: list[Completion], started: float) -> LlmUsage:
        return LlmUsage(model=self.backend.model_name, prompt_tokens=sum(c.prompt_tokens for c in completions),
                        completion_tokens=sum(c.completion_tokens for c in completions),
                        cached_prompt_tokens=sum(c.cached_prompt_tokens for c in completions),
                        latency_s=round(time.perf_counter() - started, 3))

    async def timed_chat(
        self, messages: list[Message], schema: dict[str, Any] | None, max_tokens: int, temperature: float,
        seed: int | None = None,
    ) -> Completion:
        """One request. ``seed`` fixes the sampling of this request; without one a restarted process would replay
        the sampling of its predecessor and propose the same thing again."""
        started = time.perf_counter()
        try:
            completion = await self.backend.chat(messages, schema=schema, max_tokens=max_tokens,
                                                 temperature=temperature, seed=seed)
        except LlmError:
            metrics.LLM_FAILURES.labels(self.service, "backend").inc()
            raise
        elapsed = time.perf_counter() - started
        recorded = _RECORDING.get()
        if recorded is not None:
            recorded.append(Exchange(tuple(dict(m) for m in messages), completion.text, schema is not None))
        metrics.LLM_SECONDS.labels(self.service).observe(elapsed)
        metrics.LLM_TOKENS.labels(self.service, "prompt").inc(completion.prompt_tokens)
        metrics.LLM_TOKENS.labels(self.service, "prompt_cached").inc(completion.cached_prompt_tokens)
        metrics.LLM_TOKENS.labels(self.service, "completion").inc(completion.completion_tokens)
        if elapsed > 0:
            metrics.LLM_TOKENS_PER_SECOND.labels(self.service).set(completion.completion_tokens / elapsed)
        return completion


# --- backends ---------------------------------------------------------------------------------------------------------


class LlamaCppBackend:
    """llama-cpp-python in this process.

    Loading is lazy (a service starts and reports healthy before its first LLM call, and a model that is missing
    shows up as a clear error on that call); calls are serialised because a Llama is not thread-safe.
    """

    def __init__(self, model: str, models_dir: Path, *, n_ctx: int = 8192, n_threads: int = 1,
                 n_threads_batch: int | None = None, n_gpu_layers: int = 0, seed: int = 0,
                 host_lock: Path | None = None) -> None:
        self.model = model
        self.models_dir = models_dir
        self.host_lock = host_lock
        self.model_name = Path(model).stem if model.endswith(".gguf") else model
        # n_threads_batch None: llama-cpp-python's default, every core, for the prompt.
        self.options = {"n_ctx": n_ctx, "n_threads": n_threads, "n_threads_batch": n_threads_batch,
                        "n_gpu_layers": n_gpu_layers, "seed": seed}
        self._llama: Any = None
        self._lock = asyncio.Lock()

    def load(self) -> Any:
        if self._llama is None:
            from shared.models import ModelError, resolve

            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise LlmError("llama-cpp-python is not installed: run `make install`") from exc
            try:
                path = resolve(self.models_dir, self.model)
            except ModelError as exc:
                raise LlmError(str(exc)) from exc
            self._llama = Llama(model_path=str(path), verbose=False, **self.options)
        return self._llama

    async def chat(
        self, messages: list[Message], *, schema: dict[str, Any] | None, max_tokens: int, temperature: float,
        seed: int | None = None,
    ) -> Completion:
        async with self._lock:
            return await asyncio.to_thread(self._chat, messages, schema, max_tokens, temperature, seed)

    def _chat(self, messages: list[Message], schema: dict[str, Any] | None, max_tokens: int,
              temperature: float, seed: int | None) -> Completion:
        llama = self.load()
        response_format = {"type": "json_object", "schema": schema} if schema else None
        with exclusive(self.host_lock):
            result = llama.create_chat_completion(
                messages=messages, response_format=response_format, max_tokens=max_tokens, temperature=temperature,
                seed=seed,
            )
        usage = result.get("usage", {})
        return Completion(text=result["choices"][0]["message"]["content"] or "",
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)))


@contextmanager
def exclusive(lock_path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (none when None) across processes of this host.

    Every agent loads its own copy of the model; when several generate at once on a few cores (the analyst, the
    judge and the debugger answer the same events), their llama.cpp threads compete for the same cores. One at a
    time, each runs at full speed. The lock is the kernel's (flock), so it goes with a process that dies holding it.
    """
    if lock_path is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OpenAICompatibleBackend:
    """Any ``/v1/chat/completions`` server: llama.cpp's server (the stack's own), Ollama, vLLM.

    The timeout is long: on a CPU a code reply of a few thousand tokens, in a batch with the other agents' slots,
    takes minutes."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout_s: float = 1800.0,
                 schema_style: Literal["json_schema", "json_object"] = "json_schema") -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.schema_style = schema_style
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_style == "json_object":  # llama.cpp's server takes the schema beside json_object
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}

    async def chat(
        self, messages: list[Message], *, schema: dict[str, Any] | None, max_tokens: int, temperature: float,
        seed: int | None = None,
    ) -> Completion:
        body: dict[str, Any] = {"model": self.model_name, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if schema:
            body["response_format"] = self.response_format(schema)
        try:
            response = await self.client.post(f"{self.base_url}/chat/completions", json=body)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise LlmUnavailable(f"the LLM server at {self.base_url} does not answer ({exc}): see `asiarch status`"
                                 ) from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"LLM endpoint {self.base_url} failed: {exc}") from exc
        if response.status_code == 503:  # llama-server while it loads the model
            raise LlmUnavailable(f"the LLM server at {self.base_url} is not ready: {response.text[:200]}")
        if response.is_error:
            raise LlmError(f"LLM endpoint {self.base_url} answered {response.status_code}: {response.text[:500]}")
        return completion_of(response.json())

    async def aclose(self) -> None:
        await self.client.aclose()


def completion_of(payload: dict[str, Any]) -> Completion:
    usage = payload.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Completion(text=payload["choices"][0]["message"].get("content") or "",
                      prompt_tokens=int(usage.get("prompt_tokens", 0)),
                      completion_tokens=int(usage.get("completion_tokens", 0)),
                      cached_prompt_tokens=int(details.get("cached_tokens", 0)))


# The default for CPU campaigns (see the README for how it was chosen).
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


class LlmSettings(CommonSettings):
    llm_backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    # A registered model name (``asiarch models list``), a GGUF path, or the endpoint's model name.
    llm_model: str = DEFAULT_MODEL
    llm_base_url: str = "http://127.0.0.1:8080/v1"
    llm_api_key: str = ""
    llm_threads: int = Field(default=1, ge=1)
    llm_ctx: int = Field(default=8192, ge=512)
    llm_gpu_layers: int = Field(default=0, ge=-1)
    llm_max_attempts: int = Field(default=3, ge=1)
    # Models are big and shared by every checkout and data dir of the user, so they live in the user's cache.
    models_dir: Path = Path("~/.cache/asiarch/models").expanduser()
    # In-process inference takes turns across the agents of this host (see ``exclusive``); off when each agent
    # has cores or a GPU of its own.
    llm_one_at_a_time: bool = True

    def host_lock(self) -> Path | None:
        return self.models_dir / ".inference.lock" if self.llm_one_at_a_time else None


def build_backend(settings: LlmSettings) -> LlmBackend:
    if settings.llm_backend == "openai":
        return OpenAICompatibleBackend(settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key)
    return LlamaCppBackend(settings.llm_model, settings.models_dir, n_ctx=settings.llm_ctx,
                           n_threads=settings.llm_threads, n_gpu_layers=settings.llm_gpu_layers,
                           host_lock=settings.host_lock())
