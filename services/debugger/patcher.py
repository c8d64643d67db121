"""The LLM patcher: the smallest change that makes a failed mixer run, keeping its idea.

The prompt carries the code, the error kind, the trimmed traceback and the most similar past failures with the
fixes that worked. Efficiency failures ask for chunking or vectorising, never for dropping the idea. Like the
researcher, the LLM gives its diagnosis as JSON and then code as a fenced block (code inside JSON strings breaks
small models). When the traceback has a frame of the candidate's file, the function it was raised in is shown with
the line marked and only that function is asked for, then spliced back; otherwise the whole file is. The result is
repaired and statically checked like a proposal; a patch that does not change the code is no patch, and the LLM is
told so once before the debugger gives up.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from string import Template

from shared.events import DebugPatched, LlmUsage, TrainFailed, caused_by
from shared.llm import LlmClient, MalformedOutput, add_usage
from shared.memory_client import FailureHit, MemoryClient
from shared.mixer.baselines import BASELINES
from shared.mixer.edit import extract_function, repair, unified_diff
from shared.mixer.frames import Region, faulty_region, splice
from shared.mixer.source import find_mixer, static_problem, strip_fences

log = logging.getLogger(__name__)
PRODUCER = "debugger"
TRACEBACK_CHARS = 2500
# A small model asked again at a low temperature mostly returns the same (often unchanged) function; each retry
# samples wider.
RETRY_TEMPERATURES = (0.3, 0.7, 1.0)
MISSING_DEFINITION = re.compile(r"NameError|object has no attribute")


@dataclass(frozen=True)
class PatchAttempt:
    """A patch, or none, and what asking the LLM for it cost either way."""

    patched: DebugPatched | None
    usage: LlmUsage | None = None


DIAGNOSIS_SCHEMA = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "maxLength": 500,
                      "description": "the cause of the failure and the fix, in one or two sentences"},
    },
    "required": ["diagnosis"],
}
WRITE_FIX = """\
Now write the whole corrected file, changing only the faulty lines. Answer with one ```python code block and
nothing else."""
WRITE_REGION = """\
Now write only the corrected function `{name}` (lines {start}-{end}), changing only the faulty lines. Answer with
that one function in one ```python code block and nothing else."""
RETRY = "That was not accepted: {problem}. Answer again, in one ```python code block."

SYSTEM = ("You fix bugs in PyTorch token mixers with the smallest possible change. You keep the design idea intact "
          "and answer with JSON only.")

PATCH = Template("""\
This mixer failed during checks or training.

Error kind: $kind
Message: $message
Traceback (end):
```
$traceback
```

The code:
```python
$code
```

$where
$advice
$history
Find the faulty lines. The class must stay `Mixer(nn.Module)` with `__init__(self, d_model, n_heads, **kwargs)`
and `forward(self, x)` mapping (batch, seq, d_model) to the same shape. First give your diagnosis only, as a JSON
object with one key, "diagnosis".
""")

ADVICE = {
    "efficiency": "It was too slow. Do not drop the idea: replace Python loops over time steps with chunked or "
                  "vectorised tensor operations (process chunks of 64 tokens, carry a state between chunks).",
    "complexity": "Its cost grew quadratically with the sequence length. Keep the idea but never build a "
                  "(seq x seq) matrix over the whole sequence: use chunks of at most 64 with a carried state.",
    "causality": "Outputs depended on future tokens. Check masks (use a lower-triangular mask inside chunks), "
                 "cumulative sums, convolutions (pad on the left only) and any pooling over the sequence.",
    "nan": "It produced NaN or Inf. Bound exponentials (use sigmoid or exp(-softplus) for decays, subtract a max "
           "before exp), add eps to denominators, normalise keys.",
    "memory": "It ran out of memory. Avoid materialising (batch, heads, seq, d, d) tensors for every step.",
    "timeout": "It ran past its time limit. Remove loops over time steps; vectorise over chunks.",
    "params": "It had too many or too few parameters. Adjust projection sizes, keep the structure.",
    "batch": "Its outputs depended on the batch size. Never mix information across the batch dimension.",
}


def patch_messages(failure: TrainFailed, similar: list[FailureHit], region: Region | None) -> list[dict[str, str]]:
    history = ""
    if similar:
        lines = ["Similar past failures and the fixes that worked:"]
        for hit in similar:
            if hit.fix is not None:
                lines.append(f"- {hit.error_kind}: {hit.message[:200]}\n  fix: {hit.fix.diagnosis[:300]}")
        history = "\n".join(lines) + "\n" if len(lines) > 1 else ""
    where = "" if region is None else (f"It was raised in `{region.name}`, at the line marked >:\n```\n"
                                       f"{region.numbered(failure.code)}\n```\n")
    prompt = PATCH.substitute(
        kind=failure.error_kind, message=failure.message[:1000], traceback=failure.traceback[-TRACEBACK_CHARS:],
        code=failure.code, where=where, advice=ADVICE.get(failure.error_kind, ""), history=history,
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


class LlmPatcher:
    def __init__(self, llm: LlmClient, memory: MemoryClient) -> None:
        self.llm = llm
        self.memory = memory

    async def patch(self, failure: TrainFailed) -> PatchAttempt:
        if not failure.code:
            return PatchAttempt(None)
        repaired = mechanical_repair(failure)
        if repaired is not None:
            return PatchAttempt(repaired)
        similar = await self.memory.similar_failures(f"{failure.error_kind}: {failure.message}\n{failure.traceback}")
        # A small model fixes one function far more often than it rewrites a file without breaking something else;
        # but a missing definition lives outside the function that tripped on it, so then the whole file is asked for.
        missing_definition = MISSING_DEFINITION.search(failure.message) is not None
        region = None if missing_definition else faulty_region(failure.code, failure.traceback)
        messages = patch_messages(failure, similar, region)
        try:
            diagnosis = await self.llm.complete_json(messages, DIAGNOSIS_SCHEMA, max_tokens=300, temperature=0.3,
                                                     seed=patch_seed(failure))
        except MalformedOutput as exc:
            log.info("%s: no usable diagnosis: %s", failure.experiment_id, exc)
            return PatchAttempt(None)
        usages = [diagnosis.usage]
        ask = WRITE_FIX if region is None else WRITE_REGION.format(name=region.name, start=region.start,
                                                                  end=region.end)
        messages += [{"role": "assistant", "content": json.dumps(diagnosis.data)}, {"role": "user", "content": ask}]
        for index, temperature in enumerate(RETRY_TEMPERATURES):
            text, usage = await self.llm.complete_text(messages, max_tokens=2048, temperature=temperature,
                                                       seed=patch_seed(failure) + 8 + index)
            usages.append(usage)
            code = patched_code(failure.code, region, text)
            if code is None:
                problem: str | None = f"the reply has no function named `{region.name if region else 'Mixer'}`"
            else:
                problem = rejection(code, failure.code)
            if code is not None and problem is None:
                usage = add_usage(*usages)
                return PatchAttempt(patch_event(failure, str(diagnosis.data["diagnosis"]), code, usage), usage)
            log.info("%s: patch refused: %s", failure.experiment_id, problem)
            messages += [{"role": "assistant", "content": text[:6000]},
                         {"role": "user", "content": RETRY.format(problem=problem)}]
        return PatchAttempt(None, add_usage(*usages))


def mechanical_repair(failure: TrainFailed) -> DebugPatched | None:
    """A static problem with one right fix (a standard import the file uses but forgot, a helper a built-in
    baseline defines, Markdown fences) is fixed without the LLM; None when that does not do it."""
    if failure.error_kind not in ("syntax", "contract"):
        return None
    code = repair(failure.code, donors=[path.read_text() for path in BASELINES.values()])
    if rejection(code, failure.code) is not None:
        return None
    before = set(failure.code.splitlines())
    added = [line.strip() for line in code.splitlines() if line not in before and line.strip()]
    diagnosis = f"{failure.error_kind}: {failure.message}; repaired without the LLM, adding: {'; '.join(added[:5])}"
    return patch_event(failure, diagnosis, code)


def patch_event(failure: TrainFailed, diagnosis: str, code: str, llm: LlmUsage | None = None) -> DebugPatched:
    """The next attempt of the failed experiment, with ``code`` and its diff against the failed code."""
    return DebugPatched(**caused_by(failure, PRODUCER), attempt=failure.attempt + 1, diagnosis=diagnosis, code=code,
                        diff=unified_diff(failure.code, code, "failed.py", "patched.py"), profile=failure.profile,
                        llm=llm)


def patch_seed(failure: TrainFailed) -> int:
    """A sampling seed per experiment and attempt: a restarted debugger replays its own samples, while the next
    attempt at the same experiment (or another experiment's same error) samples afresh. Spaced by 16: the diagnosis's
    own retries take the first few seeds, the code replies the ones from 8 on."""
    digest = hashlib.sha256(f"{failure.experiment_id}/{failure.attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") * 16


def patched_code(failed_code: str, region: Region | None, reply: str) -> str | None:
    """The file after the reply: the reply itself when it is a whole file (with the top-level helpers it dropped
    taken back from the failed file), else the failed file with the faulty function replaced by the reply's
    function of that name (None when the reply has no such function)."""
    if region is None or is_whole_file(reply):
        # Asked for a whole file, a small model retypes the class and forgets the helper functions below it.
        return repair(reply, donors=[failed_code])
    function = extract_function(reply, region.name)
    return None if function is None else splice(failed_code, region, function)


def is_whole_file(reply: str) -> bool:
    """Whether the reply is a whole mixer file (it defines ``Mixer``) rather than one function."""
    try:
        return find_mixer(ast.parse(strip_fences(reply))) is not None
    except SyntaxError:
        return False


def rejection(code: str, failed_code: str) -> str | None:
    """Why a patch is no patch: not a valid mixer, or the failed code unchanged."""
    problem = static_problem(code)
    if problem is not None:
        return f"the patched code is not a valid mixer ({problem.detail})"
    if code.strip() == failed_code.strip():
        return "the code is unchanged: change the faulty lines"
    return None
