"""The patcher: the smallest change that makes a failed mixer run, keeping its idea, tried before it is sent.

One attempt: the failed code is run through the trial (the engineer's checks in seconds, sandboxed) to reproduce
the failure with its locals; the mechanical repairs the error calls for are tried; then the LLM is asked, with the
measured facts, the advice for the kind and the past fixes that worked, and each reply is tried too. A patch that
passes goes back to the engineer; one that fails later than the code it fixes becomes the code the attempt goes on
fixing (its new error is shown); one that fails as before is shown to the LLM with that failure. Bounded in LLM
replies and tokens; at the end the furthest-getting patch is sent, or none (a patch never equals the failed code).

Like the researcher, the LLM gives its diagnosis as JSON and then code as a fenced block. When the traceback has a
frame of the candidate's file, the function it was raised in is shown with the line marked and only that function
is asked for, then spliced back; otherwise the whole file is.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import logging
import re
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from string import Template

from services.debugger.diagnosis import Known, patch_diagnosis
from shared import metrics
from shared.events import DebugPatched, LlmUsage, TrainFailed, caused_by
from shared.llm import LlmClient, MalformedOutput, add_usage
from shared.memory_client import FailureHit, MemoryClient
from shared.mixer.edit import extract_function, merge_functions, repair, unified_diff
from shared.mixer.frames import Region, error_signature, faulty_region, splice
from shared.mixer.profiles import get_profile
from shared.mixer.repairs import DEVICE_ERROR, candidate_repairs
from shared.mixer.source import find_mixer, static_problem, strip_fences
from shared.mixer.trial import TrialOutcome, try_mixer

log = logging.getLogger(__name__)
PRODUCER = "debugger"
TRACEBACK_CHARS = 2500
# A small model asked again at a low temperature mostly returns the same (often unchanged) function; each retry
# samples wider.
RETRY_TEMPERATURES = (0.3, 0.7, 1.0)
MISSING_DEFINITION = re.compile(r"NameError|object has no attribute")
# Rounds of mechanical repairs per attempt: a repair that gets further is repaired again on its new error.
REPAIR_ROUNDS = 3

Trial = Callable[..., Awaitable[TrialOutcome]]


@dataclass(frozen=True)
class PatchAttempt:
    """A patch, or none, and what asking the LLM for it cost either way."""

    patched: DebugPatched | None
    usage: LlmUsage | None = None


@dataclass(frozen=True)
class Budget:
    """What one attempt may spend on the LLM: code replies and completion tokens."""

    replies: int = len(RETRY_TEMPERATURES)
    completion_tokens: int = 6000


DIAGNOSIS_SCHEMA = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "maxLength": 500,
                      "description": "the cause of the failure and the fix, in one or two sentences"},
        "line": {"type": "integer", "description": "the number of the faulty line"},
        "fixed_line": {"type": "string", "maxLength": 600, "description": "that whole line, corrected"},
    },
    "required": ["diagnosis", "line", "fixed_line"],
}
# Failures a check concluded (nothing in the candidate raised): the fault can be in any method, so the whole file
# is asked for rather than the function the check called.
VERDICT_KINDS = frozenset({"causality", "batch", "nan", "efficiency", "complexity", "params", "timeout"})
WRITE_FIX = """\
Now write each function you change, whole and corrected (methods of Mixer with their `self` argument), changing
only the faulty lines. Answer with one ```python code block and nothing else."""
WRITE_REGION = """\
Now write only the corrected function `{name}` (lines {start}-{end}), changing only the faulty lines. Answer with
that one function in one ```python code block and nothing else."""
RETRY = "That was not accepted: {problem}. Answer again, in one ```python code block."

SYSTEM = ("You fix bugs in PyTorch token mixers with the smallest possible change. You keep the design idea intact "
          "and answer with JSON only.")

PATCH = Template("""\
A mixer failed during checks or training: find the faulty line. The class must stay `Mixer(nn.Module)` with
`__init__(self, d_model, n_heads, **kwargs)` and `forward(self, x)` mapping (batch, seq, d_model) to the same
shape. First answer with a JSON object only: "diagnosis" (the cause and the fix, in one or two sentences), "line"
(the number of the faulty line: the failing line, or a suspect line) and "fixed_line" (that whole line, corrected).

$advice
What was measured:
$measured
Traceback (end):
```
$traceback
```

The code:
```python
$code
```

$where
$history
Now the JSON object: "diagnosis", "line", "fixed_line".
""")


def history_text(similar: list[FailureHit]) -> str:
    """Past fixes of similar failures, those that worked first, each with its diff when it is short."""
    shown = sorted((hit for hit in similar if hit.fix is not None), key=lambda hit: hit.fix_worked is not True)
    if not shown:
        return ""
    lines = ["Similar past failures and the fixes that worked:"]
    for hit in shown:
        assert hit.fix is not None
        verdict = {True: "worked", False: "did not work", None: "not retrained yet"}[hit.fix_worked]
        lines.append(f"- {hit.error_kind}: {hit.message[:200]}\n  fix ({verdict}): {hit.fix.diagnosis[:300]}")
        if hit.fix_worked and hit.fix.diff and len(hit.fix.diff) < 1200:
            lines.append("  ```diff\n" + hit.fix.diff.strip() + "\n  ```")
    return "\n".join(lines) + "\n"


def patch_messages(known: Known, similar: list[FailureHit], region: Region | None) -> list[dict[str, str]]:
    where = "" if region is None else (f"It was raised in `{region.name}`, at the line marked >:\n```\n"
                                       f"{region.numbered(known.code)}\n```\n")
    prompt = PATCH.substitute(measured=known.measured(), traceback=known.traceback[-TRACEBACK_CHARS:],
                              code=known.code, where=where, advice=known.advice, history=history_text(similar))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


@dataclass
class Progress:
    """Where one attempt stands: the furthest code so far (the failed code at first) and what it cost."""

    known: Known
    trial: TrialOutcome
    fixes: list[str] = field(default_factory=list)
    usages: list[LlmUsage] = field(default_factory=list)
    replies: int = 0

    def advance(self, code: str, trial: TrialOutcome, fix: str) -> None:
        self.known, self.trial = self.known.failing(code, trial), trial
        self.fixes.append(fix)

    @property
    def completion_tokens(self) -> int:
        return sum(usage.completion_tokens for usage in self.usages)

    @property
    def usage(self) -> LlmUsage | None:
        return add_usage(*self.usages) if self.usages else None


class LlmPatcher:
    def __init__(self, llm: LlmClient, memory: MemoryClient, *, trial: Trial | None = None,
                 default_profile: str = "smoke", budget: Budget = Budget()) -> None:
        self.llm = llm
        self.memory = memory
        self.trial = trial or (lambda code, **flags: asyncio.to_thread(partial(try_mixer, code, **flags)))
        self.default_profile = default_profile
        self.budget = budget

    async def patch(self, failure: TrainFailed) -> PatchAttempt:
        if not failure.code:
            return PatchAttempt(None)
        flags = self.trial_flags(failure)
        before = await self.trial(failure.code, **flags)
        if before.passed:  # the failure lies beyond the trial: only a patch that passes every stage gets past it
            before = TrialOutcome(stage="training", kind=failure.error_kind, message=failure.message)
        progress = Progress(Known.of(failure, before), before)
        if not await self.repair(failure, progress, flags):
            await self.ask_llm(failure, progress, flags)
        if progress.known.code == failure.code:
            return PatchAttempt(None, progress.usage)
        fix = "; then ".join(progress.fixes)
        diagnosis = patch_diagnosis(Known.of(failure, before), fix, progress.trial)
        return PatchAttempt(patch_event(failure, diagnosis, progress.known.code, progress.usage), progress.usage)

    def trial_flags(self, failure: TrainFailed) -> dict[str, object]:
        """The trial at the failure's profile; on the meta device when the run was on a GPU or failed on devices,
        with the long-input stress when it was a NaN."""
        on_devices = failure.device.startswith("cuda") or DEVICE_ERROR.search(failure.message) is not None
        return {"profile": failure.profile or self.default_profile, "device_check": on_devices,
                "stress": failure.error_kind == "nan"}

    async def repair(self, failure: TrainFailed, progress: Progress, flags: dict[str, object]) -> bool:
        """Mechanical repairs, round after round while one gets further; True once one passes."""
        profile = get_profile(str(flags["profile"]))
        for _ in range(REPAIR_ROUNDS):
            further = False
            for candidate in candidate_repairs(progress.known.for_repairs(profile.d_model, profile.n_heads)):
                outcome = await self.trial(candidate.code, **flags)
                log.info("%s: repair %r: %s", failure.experiment_id, candidate.what, outcome.summary())
                if judged(outcome, progress.trial, "repair"):
                    progress.advance(candidate.code, outcome, f"{candidate.what} (without the LLM)")
                    further = True
                    break
            if progress.trial.passed:
                return True
            if not further:
                return False
        return progress.trial.passed

    async def ask_llm(self, failure: TrainFailed, progress: Progress, flags: dict[str, object]) -> None:
        """LLM replies, each tried, until one passes or the budget is spent."""
        while progress.replies < self.budget.replies and progress.completion_tokens < self.budget.completion_tokens:
            if await self.conversation(failure, progress, flags):
                return

    async def conversation(self, failure: TrainFailed, progress: Progress, flags: dict[str, object]) -> bool:
        """One conversation about the current code's failure: a diagnosis (its line edit tried), then code replies
        until one passes (True), one gets further (False: a new conversation about its error follows) or the budget
        is spent."""
        known = progress.known
        similar = await self.memory.similar_failures(
            f"{known.kind}: {known.message}\n{known.traceback}", signature=error_signature(
                known.kind, known.message, known.traceback))
        # A small model fixes one function far more often than it rewrites a file without breaking something else;
        # but a missing definition lives outside the function that tripped on it, and a check's verdict can come
        # from any method, so then it writes the functions it changes.
        whole_file = MISSING_DEFINITION.search(known.message) is not None or known.kind in VERDICT_KINDS
        region = None if whole_file else faulty_region(known.code, known.traceback)
        messages = patch_messages(known, similar, region)
        seed = patch_seed(failure) + 32 * len(progress.fixes)
        try:
            diagnosis = await self.llm.complete_json(messages, DIAGNOSIS_SCHEMA, max_tokens=400, temperature=0.3,
                                                     seed=seed)
        except MalformedOutput as exc:
            log.info("%s: no usable diagnosis: %s", failure.experiment_id, exc)
            progress.replies += 1
            return False
        progress.usages.append(diagnosis.usage)
        log.info("%s: diagnosis: %s", failure.experiment_id, json.dumps(diagnosis.data)[:600])
        said = str(diagnosis.data["diagnosis"])
        edited = line_edit(known.code, diagnosis.data.get("line"), str(diagnosis.data["fixed_line"]))
        if edited is not None and rejection(edited, known.code) is None:
            advanced, _ = await self.tried(failure, progress, flags, edited, said)
            if advanced:
                return progress.trial.passed
        ask = WRITE_FIX if region is None else WRITE_REGION.format(name=region.name, start=region.start,
                                                                  end=region.end)
        messages += [{"role": "assistant", "content": json.dumps(diagnosis.data)}, {"role": "user", "content": ask}]
        return await self.code_replies(failure, progress, flags, messages, region, said, seed)

    async def code_replies(self, failure: TrainFailed, progress: Progress, flags: dict[str, object],
                           messages: list[dict[str, str]], region: Region | None, said: str, seed: int) -> bool:
        """Code replies, each tried, until one gets past where the attempt stands (True when it passes) or the
        budget is spent; a refused one is answered with why."""
        known = progress.known
        while progress.replies < self.budget.replies and progress.completion_tokens < self.budget.completion_tokens:
            temperature = RETRY_TEMPERATURES[min(progress.replies, len(RETRY_TEMPERATURES) - 1)]
            text, usage = await self.llm.complete_text(messages, max_tokens=2048, temperature=temperature,
                                                       seed=seed + 8 + progress.replies)
            progress.usages.append(usage)
            progress.replies += 1
            code = patched_code(known.code, region, text)
            problem = (f"the reply has no function named `{region.name if region else 'Mixer'}`" if code is None
                       else rejection(code, known.code))
            if code is not None and problem is None:
                advanced, outcome = await self.tried(failure, progress, flags, code, said)
                if advanced:
                    return progress.trial.passed
                problem = f"the patched code still fails. {known.failing(code, outcome).measured()}"
            log.info("%s: patch refused: %s", failure.experiment_id, problem[:300])
            messages += [{"role": "assistant", "content": text[:6000]},
                         {"role": "user", "content": RETRY.format(problem=problem)}]
        return False

    async def tried(self, failure: TrainFailed, progress: Progress, flags: dict[str, object], code: str,
                    said: str) -> tuple[bool, TrialOutcome]:
        """Run an LLM patch through the trial; whether it got further (the attempt then advanced to it), and how
        it fared."""
        outcome = await self.trial(code, **flags)
        log.info("%s: LLM patch: %s", failure.experiment_id, outcome.summary())
        advanced = judged(outcome, progress.trial, "llm")
        if advanced:
            progress.advance(code, outcome, said)
        return advanced, outcome


def judged(outcome: TrialOutcome, reached: TrialOutcome, source: str) -> bool:
    """Whether a tried patch gets past where the attempt stands (it passes, or fails at a later stage); counted."""
    verdict = "passed" if outcome.passed else "further" if outcome.progress > reached.progress else "refused"
    metrics.DEBUG_TRIALS.labels(PRODUCER, source, verdict).inc()
    return verdict != "refused"


def line_edit(code: str, number: object, fixed: str) -> str | None:
    """``code`` with line ``number`` replaced by the fix, re-indented to the line's depth; None when there is no
    such line or the fix changes nothing."""
    lines = code.splitlines()
    if not isinstance(number, int) or not 0 < number <= len(lines) or not fixed.strip():
        return None
    old = lines[number - 1]
    indent = old[: len(old) - len(old.lstrip())]
    replacement = [indent + line for line in textwrap.dedent(fixed.strip("\n")).splitlines()]
    if [line.strip() for line in replacement] == [old.strip()]:
        return None
    return "\n".join([*lines[:number - 1], *replacement, *lines[number:]]) + "\n"


def patch_event(failure: TrainFailed, diagnosis: str, code: str, llm: LlmUsage | None = None) -> DebugPatched:
    """The next attempt of the failed experiment, with ``code`` and its diff against the failed code."""
    return DebugPatched(**caused_by(failure, PRODUCER), attempt=failure.attempt + 1, diagnosis=diagnosis, code=code,
                        diff=unified_diff(failure.code, code, "failed.py", "patched.py"), profile=failure.profile,
                        llm=llm)


def patch_seed(failure: TrainFailed) -> int:
    """A sampling seed per experiment and attempt: a restarted debugger replays its own samples, while the next
    attempt at the same experiment (or another experiment's same error) samples afresh. Spaced by 256: within an
    attempt, each conversation takes 32 seeds (its diagnosis's own retries the first few, code replies from 8 on)."""
    digest = hashlib.sha256(f"{failure.experiment_id}/{failure.attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") * 256


def patched_code(failed_code: str, region: Region | None, reply: str) -> str | None:
    """The file after the reply: the reply itself when it is a whole file (with the top-level helpers it dropped
    taken back from the failed file); asked for the functions it changes, the failed file with each put in place;
    asked for one function, the failed file with that function replaced by the reply's of that name (None when
    the reply has no such function)."""
    if region is None or is_whole_file(reply):
        # A whole file retyped by a small model forgets the helper functions below the class.
        return repair(merge_functions(failed_code, reply), donors=[failed_code])
    function = extract_function(reply, region.name)
    return None if function is None else splice(failed_code, region, function)


def is_whole_file(reply: str) -> bool:
    """Whether the reply is a whole mixer file (it defines ``Mixer``) rather than one function."""
    try:
        return find_mixer(ast.parse(strip_fences(reply))) is not None
    except SyntaxError:
        return False


def rejection(code: str, failed_code: str) -> str | None:
    """Why a patch is no patch: not a valid mixer, or the code it fixes unchanged."""
    problem = static_problem(code)
    if problem is not None:
        return f"the patched code is not a valid mixer ({problem.detail})"
    if code.strip() == failed_code.strip():
        return "the code is unchanged: change the faulty lines"
    return None
