"""The stack's LLM: one llama.cpp server (``llama-server``) that every agent talks to over its OpenAI API.

One copy of the model in memory, whatever the number of agents. The server keeps one slot per agent
conversation (``ASIARCH_LLM_SLOTS``), so a multi-turn conversation finds its own earlier turns still evaluated in
its slot, and a host-memory prompt cache (``ASIARCH_LLM_CACHE_MIB``) for the shared prefixes of later tasks. Concurrent
requests are decoded in one batch. The binary is built by ``make install`` from the llama.cpp sources of the
llama-cpp-python release we pin (``ops/build-llama-server.sh``); ``ASIARCH_LLAMA_SERVER`` names another one.

The model it serves is kept in ``<data dir>/llm.json`` so a restart (a crash, a campaign naming another model)
serves the campaign's model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import Field

from shared.embedded import ServerStartError, spawn
from shared.llm import LlmSettings
from shared.models import ModelError, resolve

SERVED_MODEL_FILE = "llm.json"
BINARY = "llama-server"


def default_llm_threads() -> int:
    """Generation: a quarter of the cores, at least one; the rest train. On two cores one thread each: generation
    is bound by memory bandwidth, and a second thread beside a training thread only spins at llama.cpp's barriers."""
    return max(1, -(-(os.cpu_count() or 2) // 4))


class LlmServerSettings(LlmSettings):
    llm_threads: int = Field(default_factory=default_llm_threads, ge=1)
    # Prompt evaluation is compute-bound and comes in bursts: every core, as llama-cpp-python did in each agent.
    llm_batch_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # One slot per agent that talks to the LLM, and one more for the researcher's second draft at once; each
    # holds up to ``llm_ctx`` tokens.
    llm_slots: int = Field(default=5, ge=1)
    llm_cache_mib: int = Field(default=1024, ge=0)
    # Speculative decoding without a draft model: the next tokens are looked up in the context (the n-gram that
    # ends the output so far, found earlier in the prompt) and verified in one batch. The agents mostly rewrite
    # code they were shown, so most drafts are accepted: a code reply on one CPU thread came 2.8x faster (12.9 to
    # 36.5 tok/s). Sampling stays the model's own. Empty: off.
    llm_speculative: str = "ngram-simple"
    llama_server: str = ""


def server_binary(settings: LlmServerSettings) -> str | None:
    """The llama-server to run: the one named in the settings, the one ``make install`` put beside this
    interpreter, or one on PATH."""
    if settings.llama_server:
        return settings.llama_server
    beside = Path(sys.executable).parent / BINARY
    if beside.exists():
        return str(beside)
    return shutil.which(BINARY)


def stack_runs_server(settings: LlmServerSettings) -> bool:
    """Whether the embedded stack runs its own LLM server: unless the settings name a backend (an endpoint
    elsewhere, or a model in each agent), and where one is installed."""
    return "llm_backend" not in settings.model_fields_set and server_binary(settings) is not None


def served_model(data_dir: Path, default: str) -> str:
    try:
        return str(json.loads((data_dir / SERVED_MODEL_FILE).read_text())["model"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return default


def set_served_model(data_dir: Path, model: str) -> None:
    tmp = data_dir / f"{SERVED_MODEL_FILE}.tmp"
    tmp.write_text(json.dumps({"model": model}))
    tmp.replace(data_dir / SERVED_MODEL_FILE)


def server_url(port: int) -> str:
    """The OpenAI-compatible base URL of an LLM server on this host."""
    return f"http://127.0.0.1:{port}/v1"


def server_argv(binary: str, model_path: Path, alias: str, port: int, settings: LlmServerSettings) -> list[str]:
    return [
        binary, "--model", str(model_path), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(settings.llm_threads), "--threads-batch", str(settings.llm_batch_threads),
        "--parallel", str(settings.llm_slots),
        # The context is split between the slots: each gets what an in-process agent had.
        "--ctx-size", str(settings.llm_ctx * settings.llm_slots), "--n-gpu-layers", str(settings.llm_gpu_layers),
        "--cache-ram", str(settings.llm_cache_mib), "--metrics", "--no-webui",
        *(["--spec-type", settings.llm_speculative] if settings.llm_speculative else []),
    ]


def spawn_llm_server(data_dir: Path, port: int, settings: LlmServerSettings) -> subprocess.Popen[bytes]:
    """Start llama-server on the served model; it answers ``/health`` once the model is loaded."""
    binary = server_binary(settings)
    if binary is None:
        raise ServerStartError("llama-server is not installed: run `make install` (it builds it), or set "
                               "ASIARCH_LLAMA_SERVER, or ASIARCH_LLM_BACKEND=llama_cpp to load the model in each agent")
    model = served_model(data_dir, settings.llm_model)
    try:
        path = resolve(settings.models_dir, model)
    except ModelError as exc:
        raise ServerStartError(str(exc)) from exc
    argv = server_argv(binary, path, model, port, settings)
    return spawn("llm", argv, data_dir / "logs" / "llm.log")


@dataclass(frozen=True)
class LlmServerStats:
    """What the server says about itself: the model it serves and its cumulative token rates."""

    model: str
    prompt_tokens: int
    prompt_tokens_per_s: float
    completion_tokens: int
    completion_tokens_per_s: float
    requests_processing: int


METRIC_LINE = re.compile(r"^llamacpp:(\w+)\s+([0-9.eE+-]+)$", re.MULTILINE)


def server_stats(base_url: str, timeout_s: float = 2.0) -> LlmServerStats | None:
    """The server's model and token rates (None when it does not answer, or is still loading)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        models = httpx.get(f"{root}/v1/models", timeout=timeout_s)
        metrics = httpx.get(f"{root}/metrics", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if models.status_code != 200 or metrics.status_code != 200:
        return None
    values = {name: float(value) for name, value in METRIC_LINE.findall(metrics.text)}
    data = models.json().get("data") or [{}]
    return LlmServerStats(
        model=str(data[0].get("id", "?")),
        prompt_tokens=int(values.get("prompt_tokens_total", 0)),
        prompt_tokens_per_s=rate(values, "prompt_tokens_total", "prompt_seconds_total"),
        completion_tokens=int(values.get("tokens_predicted_total", 0)),
        completion_tokens_per_s=rate(values, "tokens_predicted_total", "tokens_predicted_seconds_total"),
        requests_processing=int(values.get("requests_processing", 0)),
    )


def rate(values: dict[str, float], tokens: str, seconds: str) -> float:
    elapsed = values.get(seconds, 0.0)
    return values.get(tokens, 0.0) / elapsed if elapsed > 0 else 0.0


def wait_until_serving(base_url: str, model: str, timeout_s: float = 120.0) -> LlmServerStats:
    """Block until the server answers with ``model`` loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = server_stats(base_url)
        if stats is not None and stats.model == model:
            return stats
        time.sleep(0.5)
    raise ServerStartError(f"the LLM server at {base_url} did not serve {model} after {timeout_s:.0f} s")
