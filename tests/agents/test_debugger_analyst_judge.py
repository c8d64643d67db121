"""The debugger, analyst and judge plumbing over the real memory API, with a scripted LLM."""

from __future__ import annotations

import msgspec

from services.debugger.handlers import on_train_failed
from services.debugger.patcher import LlmPatcher
from services.judge.handlers import on_train_succeeded as judge
from services.judge.scorer import LlmScorer
from shared.bus import Delivery
from shared.events import (
    DebugGaveUp,
    DebugPatched,
    ProposalCreated,
    TrainFailed,
    TrainSucceeded,
)
from shared.mixer.baselines import BASELINES
from tests.agents.conftest import MemoryWorld, scripted
from tests.memory.history import build_history

DELIVERY = Delivery(stream_seq=1, deliveries=1, subject="test")
SLOW = "import torch\n\nclass Mixer(torch.nn.Module):\n    def __init__(self, d_model, n_heads, **kw):\n" \
       "        super().__init__()\n\n    def forward(self, x):\n" \
       "        return torch.stack([x[:, : t + 1].mean(1) for t in range(x.shape[1])], 1)\n"
FAST = SLOW.replace("torch.stack([x[:, : t + 1].mean(1) for t in range(x.shape[1])], 1)",
                    "x.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)")


def diagnosis(text: str, line: int = 0, fixed_line: str = "") -> dict[str, str | int]:
    return {"diagnosis": text, "line": line, "fixed_line": fixed_line}


def history_world(world: MemoryWorld) -> list[object]:
    events = build_history(seed=1, experiments=12)
    world.apply(*events)
    return events


def failure(world: MemoryWorld, attempt: int = 1) -> TrainFailed:
    sample = next(e for e in history_world(world) if isinstance(e, TrainFailed))
    return TrainFailed(**{f: getattr(sample, f) for f in ("event_id", "occurred_at", "producer", "campaign_id",
                                                           "experiment_id")},
                       attempt=attempt, error_kind="complexity", message="elements grow as T^2.0",
                       traceback="Traceback ...\n  in forward\n", code=SLOW)


async def test_the_debugger_patches_with_context_and_a_diff(world: MemoryWorld) -> None:
    failed = failure(world)
    llm, backend = scripted(diagnosis("a Python loop over time"), f"```python\n{FAST}```")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed, DELIVERY)
    assert len(outputs) == 1 and isinstance(outputs[0], DebugPatched)
    patched = outputs[0]
    assert patched.attempt == 2 and "cumsum" in patched.code and patched.diff.startswith("--- failed.py")
    assert patched.causation_id == failed.event_id and patched.experiment_id == failed.experiment_id
    prompt = backend.seen[0][-1]["content"]
    # The trial reproduced the failure: the prompt shows its measurement, and the advice for the kind.
    assert "complexity (at the complexity check)" in prompt and "grows as T^" in prompt and "Keep the idea" in prompt
    assert "Similar past failures and the fixes that worked" in prompt
    assert "Trial: passed every trial stage" in patched.diagnosis


async def test_the_debugger_gives_up_when_patches_are_unchanged_or_attempts_run_out(world: MemoryWorld) -> None:
    failed = failure(world)
    llm, backend = scripted(diagnosis("looks fine"), SLOW, SLOW, SLOW)
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed, DELIVERY)
    assert [type(e) for e in outputs] == [DebugGaveUp]
    assert "the code is unchanged" in backend.seen[2][-1]["content"]
    # Each retry samples wider, with its own seed, so a refused patch is not simply asked for again.
    assert backend.temperatures[1:] == sorted(backend.temperatures[1:]) and backend.temperatures[-1] > 0.9
    assert len(set(backend.seeds)) == len(backend.seeds) and None not in backend.seeds
    gave_up = outputs[0]
    assert isinstance(gave_up, DebugGaveUp) and gave_up.llm is not None and gave_up.llm.completion_tokens > 0
    llm, backend = scripted()
    last = await on_train_failed(LlmPatcher(llm, world.client), 3, failure(world, attempt=3), DELIVERY)
    assert [type(e) for e in last] == [DebugGaveUp] and backend.seen == []


SHAPE_BUG = """import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kw):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        y = self.proj(x).cumsum(1)
        return y[:, :-1]

    def extra_repr(self):
        return "kept as it was"
"""
SHAPE_TRACEBACK = """Traceback (most recent call last):
  File "/runs/e1/attempt-1/mixer.py", line 11, in forward
    return y[:, :-1]
RuntimeError: output shape (2, 15, 64) differs from the input's (2, 16, 64)
"""


async def test_the_debugger_asks_for_the_faulty_function_only_and_splices_it_back(world: MemoryWorld) -> None:
    sample = failure(world)
    failed = msgspec.structs.replace(sample, error_kind="contract", message="wrong output shape",
                                     traceback=SHAPE_TRACEBACK, code=SHAPE_BUG)
    fixed_method = "```python\ndef forward(self, x):\n    y = self.proj(x).cumsum(1)\n    return y\n```"
    llm, backend = scripted(diagnosis("the slice drops the last token"), fixed_method)
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed, DELIVERY)
    assert len(outputs) == 1 and isinstance(outputs[0], DebugPatched), outputs
    patched = outputs[0].code
    assert "        return y\n" in patched and "y[:, :-1]" not in patched
    assert 'return "kept as it was"' in patched and patched.startswith("import torch\n")
    assert "  11> " in backend.seen[0][-1]["content"]  # the faulty line is pointed at
    assert "only the corrected function `forward`" in backend.seen[1][-1]["content"]


async def test_a_missing_definition_asks_for_the_whole_file(world: MemoryWorld) -> None:
    sample = failure(world)
    # (Named unlike any attribute the class has: a near-miss is renamed without the LLM.)
    missing = SHAPE_BUG.replace("y = self.proj(x)", "y = self.blend(x)").replace("return y[:, :-1]", "return y")
    failed = msgspec.structs.replace(
        sample, error_kind="runtime", message="forward on input (2, 1, 64) raised AttributeError(\"'Mixer' object "
        "has no attribute 'blend'\")", traceback=SHAPE_TRACEBACK, code=missing)
    whole = missing.replace("self.proj = nn.Linear", "self.blend = nn.Linear")
    llm, backend = scripted(diagnosis("blend is never created"), f"```python\n{whole}```")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed, DELIVERY)
    assert len(outputs) == 1 and isinstance(outputs[0], DebugPatched), outputs
    assert "only the corrected function" not in backend.seen[1][-1]["content"]
    assert outputs[0].code.strip() == whole.strip()


async def test_a_whole_file_reply_gets_back_the_helpers_it_dropped(world: MemoryWorld) -> None:
    with_helper = SHAPE_BUG.replace("        y = self.proj(x)", "        y = widen(self.proj(x))") + \
        "\n\ndef widen(y):\n    return y * 1.0\n"
    failed = msgspec.structs.replace(
        failure(world), error_kind="runtime", message="forward on input (2, 1, 64) raised NameError(\"name 'proj2' "
        "is not defined\")", traceback=SHAPE_TRACEBACK, code=with_helper)
    retyped = with_helper.split("\n\ndef widen")[0].replace("return y[:, :-1]", "return y")  # the helper left out
    llm, _ = scripted(diagnosis("the slice drops the last token"), f"```python\n{retyped}```")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed, DELIVERY)
    assert len(outputs) == 1 and isinstance(outputs[0], DebugPatched), outputs
    assert "def widen(y):" in outputs[0].code and "return y[:, :-1]" not in outputs[0].code


def trained(world: MemoryWorld) -> TrainSucceeded:
    events = history_world(world)
    with_parent = [e for e in events if isinstance(e, TrainSucceeded)]
    return with_parent[-1]


async def test_the_judge_diffs_a_child_of_a_baseline_against_the_baselines_code(world: MemoryWorld) -> None:
    events = history_world(world)
    from_baseline = {e.experiment_id for e in events if isinstance(e, ProposalCreated)
                     and e.parent_ids and e.parent_ids[0].startswith("baseline:")}
    run = next(e for e in events if isinstance(e, TrainSucceeded) and e.experiment_id in from_baseline)
    parent = next(e.parent_ids[0] for e in events if isinstance(e, ProposalCreated)
                  and e.experiment_id == run.experiment_id).removeprefix("baseline:")
    llm, backend = scripted({"innovation": 5, "complexity": 5, "rationale": "fine"})
    await judge(LlmScorer(llm, world.client), run, DELIVERY)
    prompt = backend.seen[0][-1]["content"]
    removed = [line for line in BASELINES[parent].read_text().splitlines() if line.strip()][-1]
    assert "(no parent code)" not in prompt and f"-{removed}" in prompt
