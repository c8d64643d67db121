"""The LLM judge: three 1–10 scores anchored on the baselines, with a rationale. Weights are applied in code."""

from __future__ import annotations

from string import Template
from typing import Any

from services.judge.handlers import Scores
from shared.events import TrainSucceeded
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import MemoryClient
from shared.mixer.edit import unified_diff

# Bounds the grammar can enforce: llama.cpp's schema grammar ignores minimum/maximum but honours an enum, and a
# string without maxLength lets a small model ramble until max_tokens cuts the JSON off (then every retry fails too).
SCORES = list(range(1, 11))
SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "performance": {"type": "integer", "enum": SCORES},
        "innovation": {"type": "integer", "enum": SCORES},
        "complexity": {"type": "integer", "enum": SCORES,
                       "description": "10 = simple and efficient, 1 = convoluted or costly"},
        "rationale": {"type": "string", "maxLength": 600},
    },
    "required": ["performance", "innovation", "complexity", "rationale"],
}

# How the built-in designs score, so the scale means the same thing from one judgement to the next.
ANCHORS = """\
| design | performance | innovation | complexity |
|---|---|---|---|
| linear attention (elu+1, no decay) | 3 | 2 | 9 |
| RetNet retention (fixed per-head decay) | 5 | 4 | 8 |
| GLA (data-dependent gates) | 6 | 6 | 6 |
| DeltaNet (delta rule) | 6 | 7 | 6 |
| Gated DeltaNet (gated delta rule) | 7 | 8 | 5 |
| Mamba2-like SSD | 7 | 7 | 6 |"""

SYSTEM = "You judge token-mixer designs fairly and consistently against fixed anchors. You answer with JSON only."

JUDGE = Template("""\
Score the new mixer "$name" on three 1–10 scales, using the anchors below for what each number means.

Anchors (built-in baselines):
$anchors

Measured: val loss $val_loss (parent: $parent_loss; lower is better), benchmark mean $bench.
Motivation: $motivation

Code changes against the parent:
```diff
$diff
```

performance: how good the measured results are relative to the parent and the anchors.
innovation: how new the idea is compared with the anchors. complexity: 10 = simple and efficient.
Reply with JSON: {"performance": n, "innovation": n, "complexity": n, "rationale": "..."}.
""")


def in_range(data: dict[str, Any]) -> None:
    for key in ("performance", "innovation", "complexity"):
        if not 1 <= int(data[key]) <= 10:
            raise MalformedOutput(f"{key} must be an integer from 1 to 10")


class LlmScorer:
    def __init__(self, llm: LlmClient, memory: MemoryClient) -> None:
        self.llm = llm
        self.memory = memory

    async def score(self, run: TrainSucceeded) -> Scores:
        found = await self.memory.experiment(run.experiment_id)
        experiment = found.experiment if found else None
        parent = found.lineage.parents[0] if found and found.lineage.parents else None
        parent_code = ""
        if parent is not None:
            parent_found = await self.memory.experiment(parent.id)
            parent_code = parent_found.experiment.code if parent_found else ""
        code = experiment.code if experiment else ""
        diff = unified_diff(parent_code, code)[:5000]
        bench = sum(run.benchmarks.values()) / len(run.benchmarks) if run.benchmarks else None
        prompt = JUDGE.substitute(
            name=experiment.name if experiment else run.experiment_id, anchors=ANCHORS,
            val_loss=f"{run.val_loss:.4f}",
            parent_loss=f"{parent.val_loss:.4f}" if parent and parent.val_loss is not None else "unknown",
            bench=f"{bench:.4f}" if bench is not None else "not measured",
            motivation=(experiment.motivation if experiment else "")[:1500], diff=diff or "(no parent code)",
        )
        reply = await self.llm.complete_json([{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": prompt}],
                                             SCORE_SCHEMA, max_tokens=400, temperature=0.2, validate=in_range)
        data = reply.data
        return Scores(performance=int(data["performance"]), innovation=int(data["innovation"]),
                      complexity=int(data["complexity"]), rationale=str(data["rationale"]), llm=reply.usage)
