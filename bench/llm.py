"""The agents' LLM throughput through the stack, next to llama.cpp's own figure, measured in one run.

    python bench/llm.py [--model qwen2.5-coder-0.5b] [--threads 1] [--batch-threads 2] [--completion 128] [--rivals]

The prompt is a real researcher prompt (the contract, the worked example, a baseline parent's code). Printed:

- llama.cpp's own: ``llama-bench`` at the prompt's length and the completion's (prompt and generation tok/s);
- through the stack: the agents' client (``LlmClient`` over ``OpenAICompatibleBackend``) against the stack's
  llama-server as the stack starts it (n-gram speculative decoding included): prompt tok/s from a one-token reply
  on a cold prompt (tokens the server reports cached left out), generation tok/s from its second turn asking for
  code (a long reply less a one-token one on the same cached prefix), each with its ratio to llama-bench, which
  decodes without speculation;
- the prompt cache: a second task with the same instructions and another parent, tokens sent against tokens
  evaluated;
- four agents at once: generation tok/s summed over four concurrent requests against one at a time;
- ``--rivals``: the same prompt through llama-cpp-python in this process (each agent's copy, before the stack had
  a server) and through llama-cpp-python's own server (``python -m llama_cpp.server``, which needs its extras).

Asserts nothing: speed goals are read off, not tested. Runs on an otherwise idle machine give the fair figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.researcher.prompts import WRITE_CODE, proposal_messages
from shared.embedded import free_port, spawn, stop_process_group
from shared.llm import DEFAULT_MODEL, LlamaCppBackend, LlmClient, Message, OpenAICompatibleBackend
from shared.llm_server import (
    LlmServerSettings,
    default_llm_threads,
    server_binary,
    server_url,
    set_served_model,
    spawn_llm_server,
    wait_until_serving,
)
from shared.mixer.baselines import BASELINES
from shared.mixer.edit import for_prompt
from shared.models import resolve

IDEA = json.dumps({"name": "gated-delta-decay", "motivation": "Add a per-head learned decay gate to the delta rule."})


def researcher_prompt(parent: str) -> list[Message]:
    return proposal_messages(
        move=None, example_name="gated_deltanet", example_code=for_prompt(BASELINES["gated_deltanet"].read_text()),
        parent_name=parent, parent_results="val loss 5.91 ± 0.02 (2 seeds)", parent_motivation="a built-in baseline",
        parent_code=for_prompt(BASELINES[parent].read_text()), parent_analysis="(not analysed yet)",
        references="(none yet)", cognition="- Gated Delta Networks: gating plus the delta rule",
    )


def llama_bench(model: Path, threads: int, batch_threads: int, prompt_tokens: int,
                completion_tokens: int) -> tuple[float, float]:
    """llama.cpp's own prompt tok/s (the prompt's length, on the batch threads) and generation tok/s (the
    completion's length after that prompt, on the generation threads)."""
    binary = str(Path(server_binary(LlmServerSettings()) or "llama-server").with_name("llama-bench"))

    def bench(*argv: str) -> float:
        done = subprocess.run([binary, "-m", str(model), "-r", "2", "-o", "json", *argv],
                              capture_output=True, text=True, check=True)
        return float(json.loads(done.stdout)[0]["avg_ts"])

    prompt = bench("-t", str(batch_threads), "-p", str(prompt_tokens), "-n", "0")
    generation = bench("-t", str(threads), "-p", "0", "-n", str(completion_tokens), "-d", str(prompt_tokens))
    return prompt, generation


async def timed(client: LlmClient, messages: list[Message], max_tokens: int) -> tuple[float, int, int, int]:
    """Seconds, prompt tokens, cached prompt tokens and completion tokens of one free-text request."""
    started = time.perf_counter()
    _, usage = await client.complete_text(messages, max_tokens=max_tokens, temperature=0.0, seed=1)
    return time.perf_counter() - started, usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens


async def through(client: LlmClient, completion: int) -> dict[str, float]:
    """Prompt tok/s on a cold prompt; generation tok/s on its second turn (asking for code), from a long reply
    less a one-token reply on the same cached prefix; and what the cache holds for a second task."""
    messages = researcher_prompt("deltanet")
    await timed(client, [{"role": "user", "content": "Say hi."}], 4)  # warm up, as llama-bench does
    cold_s, prompt_tokens, cold_cached, _ = await timed(client, messages, 1)
    second_turn = [*messages, {"role": "assistant", "content": IDEA}, {"role": "user", "content": WRITE_CODE}]
    short_s, _, _, _ = await timed(client, second_turn, 1)
    long_s, _, _, generated = await timed(client, second_turn, completion)
    other_s, other_prompt, other_cached, _ = await timed(client, researcher_prompt("gla"), 1)
    return {"prompt_tokens": prompt_tokens, "prompt_tps": (prompt_tokens - cold_cached) / cold_s,
            "generation_tps": (generated - 1) / (long_s - short_s), "generated": generated,
            "second_task_prompt": other_prompt, "second_task_cached": other_cached, "second_task_s": other_s,
            "cold_s": cold_s}


async def side_by_side(client: LlmClient, completion: int, agents: int = 4) -> tuple[float, float]:
    """Generation tok/s of one request alone, and summed over ``agents`` concurrent ones (each its own prompt)."""
    prompts = [[{"role": "user", "content": f"Write a Python function number {i} that adds two numbers."}]
               for i in range(agents)]
    alone_s, _, _, alone_tokens = await timed(client, prompts[0], completion)
    started = time.perf_counter()
    results = await asyncio.gather(*(timed(client, p, completion) for p in prompts))
    together_s = time.perf_counter() - started
    return alone_tokens / alone_s, sum(r[3] for r in results) / together_s


def start_llama_cpp_python_server(model: Path, threads: tuple[int, int], port: int,
                                  log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads[0]),
            "--n_threads_batch", str(threads[1]),
            "--n_ctx", "8192", "--port", str(port), "--host", "127.0.0.1"]
    return spawn("llama-cpp-python-server", argv, log)


def wait_for_models(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def print_row(name: str, prompt_tps: float, generation_tps: float, own: tuple[float, float]) -> None:
    print(f"{name:<34} prompt {prompt_tps:8.1f} tok/s (ratio {prompt_tps / own[0]:.2f})   "
          f"generation {generation_tps:6.1f} tok/s (ratio {generation_tps / own[1]:.2f})")


async def main(args: argparse.Namespace) -> None:
    settings = LlmServerSettings(llm_model=args.model, llm_threads=args.threads, llm_batch_threads=args.batch_threads,
                                 llm_slots=4)
    model_path = resolve(settings.models_dir, args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        set_served_model(data_dir, args.model)
        port = free_port()
        proc = spawn_llm_server(data_dir, port, settings)
        url = server_url(port)
        try:
            wait_until_serving(url, args.model)
            client = LlmClient(OpenAICompatibleBackend(url, args.model), "bench")
            stack = await through(client, args.completion)
            alone, together = await side_by_side(client, args.completion)
        finally:
            stop_process_group(proc)
        own = llama_bench(model_path, args.threads, args.batch_threads, int(stack["prompt_tokens"]),
                          int(stack["generated"]))
        print(f"model {args.model}, {args.threads} generation / {args.batch_threads} prompt thread(s); prompt "
              f"{stack['prompt_tokens']:.0f} tokens (a researcher's proposal prompt), completion "
              f"{stack['generated']:.0f} tokens")
        print_row("llama.cpp's own (llama-bench)", *own, own)
        print_row("agents through the stack's server", stack["prompt_tps"], stack["generation_tps"], own)
        saved = stack["second_task_cached"] / stack["second_task_prompt"]
        print(f"prompt cache, a second task: {stack['second_task_cached']:.0f} of {stack['second_task_prompt']:.0f} "
              f"prompt tokens already evaluated ({saved:.0%}); {stack['second_task_s']:.1f} s against "
              f"{stack['cold_s']:.1f} s cold")
        print(f"four agents at once: {together:.1f} generated tok/s summed, against {alone:.1f} alone "
              f"(ratio {together / alone:.2f})")
        if args.rivals:
            await rivals(args, model_path, own, data_dir)


async def rivals(args: argparse.Namespace, model_path: Path, own: tuple[float, float], data_dir: Path) -> None:
    backend = LlamaCppBackend(str(model_path), Path(), n_threads=args.threads, n_threads_batch=args.batch_threads)
    in_process = await through(LlmClient(backend, "bench"), args.completion)
    print_row("llama-cpp-python in process", in_process["prompt_tps"], in_process["generation_tps"], own)
    port = free_port()
    proc = start_llama_cpp_python_server(model_path, (args.threads, args.batch_threads), port, data_dir / "rival.log")
    url = server_url(port)
    try:
        wait_for_models(url)
        client = LlmClient(OpenAICompatibleBackend(url, args.model, schema_style="json_object"), "bench")
        served = await through(client, args.completion)
        alone, together = await side_by_side(client, args.completion)
    finally:
        stop_process_group(proc)
    print_row("llama-cpp-python's server", served["prompt_tps"], served["generation_tps"], own)
    print(f"  its second task: {served['second_task_cached']:.0f} cached tokens reported, "
          f"{served['second_task_s']:.1f} s against {served['cold_s']:.1f} s cold; four at once "
          f"{together:.1f} tok/s summed against {alone:.1f} alone")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=default_llm_threads(), help="generation threads")
    parser.add_argument("--batch-threads", type=int, default=os.cpu_count() or 1, help="prompt threads")
    parser.add_argument("--completion", type=int, default=128)
    parser.add_argument("--rivals", action="store_true", help="also llama-cpp-python in process and its server")
    asyncio.run(main(parser.parse_args()))
