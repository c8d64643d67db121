"""The LLM judge: three 1–10 scores anchored on the baselines, with a rationale. Weights are applied in code."""

from __future__ import annotations

from string import Template
from typing import Any

from services.judge.handlers import Scores
from shared.events import TrainSucceeded
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import ExperimentWithLineage, MemoryClient, UnknownExperiment
from shared.mixer.baselines import BASELINES, baseline_of_ref
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

    async def parent_of(self, found: ExperimentWithLineage) -> tuple[str, float | None]:
        """The parent's code and val loss: an experiment's from memory, a built-in baseline's from its file."""
        if found.lineage.parents:
            parent = found.lineage.parents[0]
            parent_found = await self.memory.experiment(parent.id)
            return (parent_found.experiment.code if parent_found else ""), parent.val_loss
        baselines = [name for ref in found.lineage.missing_parents if (name := baseline_of_ref(ref))]
        return (BASELINES[baselines[0]].read_text() if baselines else ""), None

    async def score(self, run: TrainSucceeded, as_of: int) -> Scores:
        found = await self.memory.experiment(run.experiment_id, as_of=as_of)
        if found is None:
            raise UnknownExperiment(f"memory has projected {run.experiment_id}'s training but knows no such "
                                       "experiment: nothing to judge")
        experiment = found.experiment
        parent_code, parent_loss = await self.parent_of(found)
        diff = unified_diff(parent_code, experiment.code)[:5000]
        bench = sum(run.benchmarks.values()) / len(run.benchmarks) if run.benchmarks else None
        prompt = JUDGE.substitute(
            name=experiment.name, anchors=ANCHORS,
            val_loss=f"{run.val_loss:.4f}",
            parent_loss=f"{parent_loss:.4f}" if parent_loss is not None else "unknown",
            bench=f"{bench:.4f}" if bench is not None else "not measured",
            motivation=experiment.motivation[:1500], diff=diff or "(no parent code)",
        )
        reply = await self.llm.complete_json([{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": prompt}],
                                             SCORE_SCHEMA, max_tokens=400, temperature=0.2, validate=in_range)
        data = reply.data
        return Scores(performance=int(data["performance"]), innovation=int(data["innovation"]),
                      complexity=int(data["complexity"]), rationale=str(data["rationale"]), llm=reply.usage)
