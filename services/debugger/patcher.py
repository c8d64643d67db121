"""The LLM patcher: the smallest change that makes a failed mixer run, keeping its idea.

The prompt carries the code, the error kind, the trimmed traceback and the most similar past failures with the
fixes that worked. Efficiency failures ask for chunking or vectorising, never for dropping the idea. The reply is
repaired and statically checked like a proposal; a patch that does not change the code is no patch.
"""

from __future__ import annotations

import difflib
from string import Template

from shared.events import DebugPatched, TrainFailed, caused_by
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import FailureHit, MemoryClient
from shared.mixer_source import repair, static_problem

PRODUCER = "debugger"
TRACEBACK_CHARS = 2500

PATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "description": "the cause of the failure in one or two sentences"},
        "code": {"type": "string", "description": "the complete corrected file"},
    },
    "required": ["diagnosis", "code"],
}

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

$advice
$history
Find the faulty lines and change only them. The class must stay `Mixer(nn.Module)` with
`__init__(self, d_model, n_heads, **kwargs)` and `forward(self, x)` mapping (batch, seq, d_model) to the same shape.
Reply with JSON: {"diagnosis": "...", "code": "<the complete corrected file>"}.
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


def patch_messages(failure: TrainFailed, similar: list[FailureHit]) -> list[dict[str, str]]:
    history = ""
    if similar:
        lines = ["Similar past failures and the fixes that worked:"]
        for hit in similar:
            if hit.fix is not None:
                lines.append(f"- {hit.error_kind}: {hit.message[:200]}\n  fix: {hit.fix.diagnosis[:300]}")
        history = "\n".join(lines) + "\n" if len(lines) > 1 else ""
    prompt = PATCH.substitute(
        kind=failure.error_kind, message=failure.message[:1000], traceback=failure.traceback[-TRACEBACK_CHARS:],
        code=failure.code, advice=ADVICE.get(failure.error_kind, ""), history=history,
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def unified_diff(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile="failed.py", tofile="patched.py"))


class LlmPatcher:
    def __init__(self, llm: LlmClient, memory: MemoryClient) -> None:
        self.llm = llm
        self.memory = memory

    async def patch(self, failure: TrainFailed) -> DebugPatched | None:
        if not failure.code:
            return None
        similar = await self.memory.similar_failures(f"{failure.error_kind}: {failure.message}\n{failure.traceback}")

        def acceptable(data: dict[str, object]) -> None:
            fixed = repair(str(data["code"]))
            problem = static_problem(fixed)
            if problem is not None:
                raise MalformedOutput(f"the patched code is not a valid mixer: {problem.detail}")
            if fixed.strip() == failure.code.strip():
                raise MalformedOutput("the code is unchanged: change the faulty lines")

        try:
            reply = await self.llm.complete_json(patch_messages(failure, similar), PATCH_SCHEMA, max_tokens=2048,
                                                 temperature=0.3, validate=acceptable)
        except MalformedOutput:
            return None
        code = repair(str(reply.data["code"]))
        return DebugPatched(
            **caused_by(failure, PRODUCER), attempt=failure.attempt + 1, diagnosis=str(reply.data["diagnosis"]),
            code=code, diff=unified_diff(failure.code, code), llm=reply.usage,
        )
