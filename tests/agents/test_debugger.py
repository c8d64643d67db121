"""The debugger tries before it sends: every patch runs through the trial (the engineer's checks, sandboxed); a
scripted LLM stands in for the model, the trial and the memory API are real."""

from __future__ import annotations

import msgspec
import pytest

from services.debugger.handlers import on_train_failed
from services.debugger.patcher import LlmPatcher
from shared.bus import Delivery
from shared.events import DebugGaveUp, DebugPatched, TrainFailed, new_event_id, utc_now
from shared.mixer.frames import pointed_traceback
from tests.agents.conftest import MemoryWorld, scripted

pytestmark = pytest.mark.slow
DELIVERY = Delivery(stream_seq=1, deliveries=1, subject="test")
HEAD = ("import torch\nimport torch.nn as nn\n\n\nclass Mixer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, **kwargs):\n        super().__init__()\n"
        "        self.proj = nn.Linear(d_model, d_model)\n\n    def forward(self, x):\n")
COUNTS = "torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)"
CAUSAL = HEAD + f"        return torch.cumsum(self.proj(x), 1) / {COUNTS}\n"
# A mean over the whole sequence: every position sees the future. No mechanical repair is for this.
LEAKS = HEAD + "        return self.proj(x) + x.mean(1, keepdim=True)\n"


def failed(code: str, kind: str, message: str, traceback: str = "") -> TrainFailed:
    return TrainFailed(event_id=new_event_id(), occurred_at=utc_now(), producer="engineer", campaign_id="c-debug",
                       experiment_id="e-debug", attempt=1, error_kind=kind, message=message, code=code,  # type: ignore[arg-type]
                       traceback=traceback or pointed_traceback(code, kind, message), profile="smoke")


def diagnosis(text: str, line: int = 0, fixed_line: str = "") -> dict[str, str | int]:
    return {"diagnosis": text, "line": line, "fixed_line": fixed_line}


async def test_a_mechanical_repair_is_tried_and_sent_without_the_llm(world: MemoryWorld) -> None:
    code = HEAD + "        b, t, d = x.shape\n        y = self.proj(x).reshape(b, t, 4, -1).transpose(1, 2)\n" \
                  f"        y = torch.cumsum(y, 2) / {COUNTS}.unsqueeze(1)\n" \
                  "        return y.transpose(1, 2).view(b, t, d)\n"
    llm, backend = scripted()
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failed(code, "runtime", "view"), DELIVERY)
    assert [type(e) for e in outputs] == [DebugPatched] and backend.seen == []
    patched = outputs[0]
    assert isinstance(patched, DebugPatched) and ".reshape(b, t, d)" in patched.code and patched.llm is None
    assert "without the LLM" in patched.diagnosis and "Trial: passed every trial stage" in patched.diagnosis
    assert "line 14" in patched.diagnosis  # the failing line the trial reproduced, not the event's guess


async def test_a_patch_that_still_fails_its_check_is_never_published(world: MemoryWorld) -> None:
    still_leaking = LEAKS.replace("x.mean(1", "0.5 * x.mean(1")
    reply = f"```python\ndef forward(self, x):\n{still_leaking.split('def forward(self, x):')[1]}```"
    llm, backend = scripted(diagnosis("the scale"), reply, reply, reply)
    failure = failed(LEAKS, "causality", "outputs before 1 depend on later inputs")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failure, DELIVERY)
    assert [type(e) for e in outputs] == [DebugGaveUp]
    retry = backend.seen[2][-1]["content"]
    assert "still fails" in retry and "causality (at the causality check)" in retry
    assert "failing line" not in retry  # a check's verdict has no raising line to point at
    first = backend.seen[0][-1]["content"]
    assert "perturbing inputs at positions >=" in first and "Outputs depended on future tokens" in first


async def test_a_line_edit_from_the_diagnosis_is_tried_first(world: MemoryWorld) -> None:
    fixed = CAUSAL.splitlines()[-1].strip()
    llm, backend = scripted(diagnosis("a mean over the sequence sees the future", 11, fixed))
    failure = failed(LEAKS, "causality", "outputs before 1 depend on later inputs")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failure, DELIVERY)
    assert [type(e) for e in outputs] == [DebugPatched] and len(backend.seen) == 1
    assert isinstance(outputs[0], DebugPatched) and outputs[0].code.strip() == CAUSAL.strip()
    assert "a mean over the sequence" in outputs[0].diagnosis
    # The verdict has no raising line: the prompt pointed at the suspect line instead.
    assert "suspect line 11: `return self.proj(x) + x.mean(1, keepdim=True)`" in backend.seen[0][-1]["content"]


async def test_a_patch_that_gets_further_is_fixed_on_within_the_attempt(world: MemoryWorld) -> None:
    # Two bugs: an undefined helper (raised at the contract check) and the future leak behind it.
    broken = LEAKS.replace("x.mean(1, keepdim=True)", "prefix_mean(x)")
    first_fix = f"```python\n{LEAKS}```"
    second_fix = f"```python\n{CAUSAL}```"
    llm, backend = scripted(diagnosis("prefix_mean is undefined"), first_fix, diagnosis("now it leaks"), second_fix)
    failure = failed(broken, "runtime", "NameError: name 'prefix_mean' is not defined")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failure, DELIVERY)
    assert [type(e) for e in outputs] == [DebugPatched], outputs
    patched = outputs[0]
    assert isinstance(patched, DebugPatched) and patched.code.strip() == CAUSAL.strip()
    assert "; then " in patched.diagnosis and patched.attempt == 2
    # The second conversation is about the new failure, with the code that got further.
    assert "causality" in backend.seen[2][-1]["content"] and "prefix_mean" not in backend.seen[2][-1]["content"]


async def test_the_furthest_patch_is_sent_when_none_passes(world: MemoryWorld) -> None:
    broken = LEAKS.replace("x.mean(1, keepdim=True)", "prefix_mean(x)")
    llm, _ = scripted(diagnosis("prefix_mean is undefined"), f"```python\n{LEAKS}```", diagnosis("leaks"),
                      "no code", "no code")
    failure = failed(broken, "runtime", "NameError: name 'prefix_mean' is not defined")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failure, DELIVERY)
    assert [type(e) for e in outputs] == [DebugPatched]
    patched = outputs[0]
    assert isinstance(patched, DebugPatched) and patched.code.strip() == LEAKS.strip()
    assert "Trial: fails at causality" in patched.diagnosis


async def test_a_failure_the_trial_cannot_reproduce_needs_a_patch_that_passes(world: MemoryWorld) -> None:
    """A NaN at step 400 of training: the trial passes the failed code, so only a passing patch goes back."""
    llm, _ = scripted(diagnosis("bound it", 11, ""), f"```python\n{LEAKS}```",
                      f"```python\n{CAUSAL.replace('/ torch', '* 0.9 / torch')}```")
    failure = msgspec.structs.replace(failed(CAUSAL, "nan", "loss is NaN at step 400"), traceback="")
    outputs = await on_train_failed(LlmPatcher(llm, world.client), 3, failure, DELIVERY)
    assert [type(e) for e in outputs] == [DebugPatched]
    assert isinstance(outputs[0], DebugPatched) and "* 0.9 /" in outputs[0].code
