"""How often the debugger fixes a typical bug, and at what cost: its own suite of broken mixers, one bug each.

    python bench/debugger.py [--model qwen2.5-coder-0.5b] [--profile smoke] [--bugs a,b] [--attempts 2]
                             [--threads 2] [--diffs DIR] [--json FILE]

Each file of ``bench/bugs/`` is a mixer with one bug. Its failure is what the engineer's checks report (the trial:
the checks, plus the meta-device check for the bugs that only break on a GPU and the long-input stress); the
debugger (mechanical repairs, then the local LLM, each patch tried before it is sent) gets up to ``--attempts``
tries, each retried through the checks as the engineer would. A bug counts as fixed when the final code passes
every check. No memory of past fixes is used: the suite measures the debugger's own reach.

Prints, per bug: fixed or not, patches sent, whether the LLM was needed, LLM tokens and seconds, lines changed;
then the fix rate, patches per fix, LLM tokens and seconds per fix. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.debugger.patcher import LlmPatcher
from shared.events import TrainFailed, new_event_id, utc_now
from shared.llm import LlmClient, LlmSettings, build_backend
from shared.memory_client import FailureHit
from shared.mixer.edit import unified_diff
from shared.mixer.frames import pointed_traceback
from shared.mixer.trial import TrialOutcome, try_mixer

BUGS = Path(__file__).resolve().parent / "bugs"
# Bugs that only break where the model runs on a GPU: their failure comes from a CUDA engineer.
GPU_ONLY = frozenset({"cpu_tensor_in_forward"})


class NoMemory:
    """The debugger without a memory of past fixes."""

    async def similar_failures(self, query: str, k: int = 3, only_fixed: bool = True,
                               signature: str = "") -> list[FailureHit]:
        return []


@dataclass
class BugResult:
    bug: str
    kind: str
    fixed: bool
    patches: int
    used_llm: bool
    prompt_tokens: int
    completion_tokens: int
    llm_s: float
    wall_s: float
    changed_lines: int
    diagnosis: str
    diff: str


def failure_event(name: str, code: str, trial: TrialOutcome, attempt: int, profile: str) -> TrainFailed:
    return TrainFailed(event_id=new_event_id(), occurred_at=utc_now(), producer="bench", campaign_id="bench",
                       experiment_id=f"bench-{name}", attempt=attempt, error_kind=trial.kind or "runtime",  # type: ignore[arg-type]
                       message=trial.message, code=code, profile=profile,
                       traceback=trial.traceback or pointed_traceback(code, trial.kind, trial.message),
                       device="cuda" if name in GPU_ONLY else "cpu")


async def run_bug(path: Path, patcher: LlmPatcher, profile: str, attempts: int) -> BugResult:
    name, code = path.stem, path.read_text()
    flags: dict[str, Any] = {"profile": profile, "device_check": name in GPU_ONLY, "stress": True}
    started = time.perf_counter()
    trial = await asyncio.to_thread(partial(try_mixer, code, **flags))
    kind, patches, used_llm, tokens, llm_s, diagnosis = trial.kind, 0, False, [0, 0], 0.0, ""
    current = code
    for attempt in range(1, attempts + 1):
        if trial.passed:
            break
        outcome = await patcher.patch(failure_event(name, current, trial, attempt, profile))
        if outcome.usage is not None:
            used_llm = True
            tokens = [tokens[0] + outcome.usage.prompt_tokens, tokens[1] + outcome.usage.completion_tokens]
            llm_s += outcome.usage.latency_s
        if outcome.patched is None:
            break
        patches += 1
        current, diagnosis = outcome.patched.code, outcome.patched.diagnosis
        trial = await asyncio.to_thread(partial(try_mixer, current, **flags))
    diff = unified_diff(code, current, f"bugs/{name}.py", "fixed.py")
    changed = sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    return BugResult(name, kind, trial.passed, patches, used_llm, tokens[0], tokens[1], round(llm_s, 1),
                     round(time.perf_counter() - started, 1), changed, diagnosis, diff)


def report(results: list[BugResult], model: str) -> None:
    print(f"{'bug':28s} {'kind':11s} {'fixed':5s} {'patches':>7s} {'llm':>4s} {'tokens':>7s} {'llm s':>6s} "
          f"{'wall s':>6s} {'lines':>5s}")
    for r in results:
        print(f"{r.bug:28s} {r.kind:11s} {'yes' if r.fixed else 'no':5s} {r.patches:7d} "
              f"{'yes' if r.used_llm else 'no':>4s} {r.prompt_tokens + r.completion_tokens:7d} {r.llm_s:6.1f} "
              f"{r.wall_s:6.1f} {r.changed_lines:5d}")
    fixed = [r for r in results if r.fixed]
    n = max(len(fixed), 1)
    print(f"\nmodel {model}: fixed {len(fixed)}/{len(results)} ({len(fixed) / max(len(results), 1):.0%}); "
          f"{sum(r.patches for r in results) / n:.2f} patches per fix; "
          f"{sum(r.prompt_tokens + r.completion_tokens for r in results) / n:.0f} LLM tokens per fix "
          f"({sum(r.completion_tokens for r in results) / n:.0f} generated); "
          f"{sum(r.llm_s for r in results) / n:.1f} LLM s per fix; "
          f"{sum(1 for r in fixed if not r.used_llm)} fixed without the LLM")


async def main(args: argparse.Namespace) -> None:
    settings = LlmSettings(llm_model=args.model, llm_threads=args.threads, llm_one_at_a_time=False)
    llm = LlmClient(build_backend(settings), "debugger")
    patcher = LlmPatcher(llm, NoMemory(), default_profile=args.profile)  # type: ignore[arg-type]
    names = args.bugs.split(",") if args.bugs else sorted(p.stem for p in BUGS.glob("*.py"))
    results = []
    for name in names:
        result = await run_bug(BUGS / f"{name}.py", patcher, args.profile, args.attempts)
        print(f"  {name}: {'fixed' if result.fixed else 'not fixed'} in {result.wall_s:.0f} s", flush=True)
        results.append(result)
        if args.diffs:
            Path(args.diffs).mkdir(parents=True, exist_ok=True)
            (Path(args.diffs) / f"{name}.diff").write_text(f"# {result.diagnosis}\n{result.diff}")
    report(results, args.model)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--bugs", default="", help="comma-separated names from bench/bugs (default: all)")
    parser.add_argument("--attempts", type=int, default=2, help="debug attempts per bug (the loop's default: 2)")
    parser.add_argument("--threads", type=int, default=2, help="LLM threads")
    parser.add_argument("--diffs", default="", help="write each bug's final diff to this folder")
    parser.add_argument("--json", default="", help="write the per-bug results to this file")
    parser.add_argument("--verbose", action="store_true", help="log each repair and LLM patch as it is tried")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(main(arguments))
