"""The judge: performance from the measurements (shared/judging.py), innovation and complexity from the LLM against
anchors that show each baseline's measured numbers beside its scores. Weights are applied in code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from string import Template
from typing import Any

from services.judge.handlers import Scores
from shared.events import ReplicateTrained, TrainSucceeded
from shared.judging import Standing, anchor_of, performance, score_of
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import ExperimentWithLineage, MemoryClient, ProfileBaselines
from shared.mixer.baselines import BASELINES, baseline_of_ref
from shared.mixer.edit import unified_diff
from shared.noise import Measured

# Bounds the grammar can enforce: llama.cpp's schema grammar ignores minimum/maximum but honours an enum, and a
# string without maxLength lets a small model ramble until max_tokens cuts the JSON off (then every retry fails too).
SCORES = list(range(1, 11))
SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "innovation": {"type": "integer", "enum": SCORES},
        "complexity": {"type": "integer", "enum": SCORES,
                       "description": "10 = simple and efficient, 1 = convoluted or costly"},
        "rationale": {"type": "string", "maxLength": 600},
    },
    "required": ["innovation", "complexity", "rationale"],
}

SYSTEM = "You judge token-mixer designs fairly and consistently against fixed anchors. You answer with JSON only."

JUDGE = Template("""\
Score a new mixer on two 1–10 scales, innovation and complexity, using the anchors below for what each number
means.
innovation: how new the idea is compared with the anchors (a renamed or re-tuned anchor is not new).
complexity: 10 = simple and efficient, 1 = convoluted or costly.
Reply with JSON: {"innovation": n, "complexity": n, "rationale": "..."}.

Anchors, measured at this profile (val loss: mean ± sd over seeds, lower is better$task_note):
$anchors

The new mixer is "$name". Its performance is already scored from the measurements: $performance/10 ($why).

Motivation: $motivation

Code changes against the parent:
```diff
$diff
```
""")


def in_range(data: dict[str, Any]) -> None:
    for key in ("innovation", "complexity"):
        if not 1 <= int(data[key]) <= 10:
            raise MalformedOutput(f"{key} must be an integer from 1 to 10")


@dataclass(frozen=True)
class Context:
    """What the judgement is measured against: the profile's baselines and the run's parent."""

    baselines: ProfileBaselines
    parent_name: str
    parent_code: str
    parent: Measured | None


def anchors_table(context: Context, run: Measured, name: str, run_tasks: dict[str, float]) -> str:
    tasks = context.baselines.signal_tasks
    measured = context.baselines.measured()
    floor = context.baselines.noise_sd
    header = ["design", "val loss", *tasks, "performance", "innovation", "complexity"]
    rows = [header, ["---"] * len(header)]
    for mixer in sorted(context.baselines.mixers, key=lambda m: m.val_loss_mean or math.inf):
        described, innovation, complexity = anchor_of(mixer.mixer)
        loss = mixer.measured()
        means = mixer.task_means(tasks)
        rows.append([described, loss.text() if loss else "-", *(f"{means[t]:.3f}" if t in means else "-"
                                                                 for t in tasks),
                     str(score_of(loss.mean, measured, floor)) if loss else "-", str(innovation), str(complexity)])
    if context.parent is not None and context.parent_name not in {m.mixer for m in context.baselines.mixers}:
        rows.append([f"parent: {context.parent_name}", context.parent.text(), *["-"] * len(tasks),
                     str(score_of(context.parent.mean, measured, floor)), "?", "?"])
    rows.append([f"this run: {name}", run.text(), *(f"{run_tasks[t]:.3f}" if t in run_tasks else "-" for t in tasks),
                 "?", "?", "?"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def rationale(standing: Standing, llm_part: str) -> str:
    """The performance's reason in numbers on the first line, the LLM's reasons for the other two below it."""
    return f"performance {standing.score}: {standing.reason}\n{llm_part}"


def llm_rationale(text: str) -> str:
    first, _, rest = text.partition("\n")
    return rest if first.startswith("performance ") else text


class LlmScorer:
    def __init__(self, llm: LlmClient, memory: MemoryClient) -> None:
        self.llm = llm
        self.memory = memory

    async def context(self, found: ExperimentWithLineage, profile: str) -> Context:
        """The profile's baselines and the parent: an experiment's from memory, a built-in baseline's from its
        file and its measured seeds."""
        baselines = await self.memory.baselines(profile)
        if found.lineage.parents:
            parent = found.lineage.parents[0]
            parent_found = await self.memory.experiment(parent.id)
            # A promotion's parent trained at a smaller profile: its loss is on another scale, not a reference.
            same_scale = not parent.profile or parent.profile == profile
            return Context(baselines, parent.name or parent.id, parent_found.experiment.code if parent_found else "",
                           parent.measured() if same_scale else None)
        names = [name for ref in found.lineage.missing_parents if (name := baseline_of_ref(ref))]
        if not names:
            return Context(baselines, "", "", None)
        mixer = baselines.mixer(names[0])
        return Context(baselines, names[0], BASELINES[names[0]].read_text() if names[0] in BASELINES else "",
                       mixer.measured() if mixer else None)

    @staticmethod
    def standing(context: Context, measured: Measured) -> Standing:
        return performance(measured, context.parent, context.baselines.measured(), context.baselines.noise_sd,
                           parent_name=context.parent_name or "the parent")

    async def rescore(self, replicate: ReplicateTrained, as_of: int) -> Scores | None:
        found = await self.memory.known_experiment(replicate.experiment_id, as_of, "judge")
        judged, measured = found.experiment.judge, found.experiment.measured()
        if judged is None or measured is None:
            return None
        standing = self.standing(await self.context(found, replicate.profile), measured)
        return Scores(performance=standing.score, innovation=judged.innovation, complexity=judged.complexity,
                      rationale=rationale(standing, llm_rationale(judged.rationale)))

    async def score(self, run: TrainSucceeded, as_of: int) -> Scores:
        found = await self.memory.known_experiment(run.experiment_id, as_of, "judge")
        experiment = found.experiment
        context = await self.context(found, run.profile)
        measured = experiment.measured() or Measured(run.val_loss, None, 1)
        standing = self.standing(context, measured)
        tasks = context.baselines.signal_tasks
        prompt = JUDGE.substitute(
            name=experiment.name, performance=standing.score, why=standing.reason,
            anchors=anchors_table(context, measured, experiment.name or run.experiment_id, run.benchmarks),
            task_note="; then the benchmark tasks that separate the baselines at this profile, accuracy"
            if tasks else "; no benchmark task separates the baselines at this profile beyond seed noise",
            motivation=experiment.motivation[:1500],
            diff=unified_diff(context.parent_code, experiment.code)[:5000] or "(no parent code)",
        )
        reply = await self.llm.complete_json([{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": prompt}],
                                             SCORE_SCHEMA, max_tokens=400, temperature=0.2, validate=in_range)
        data = reply.data
        return Scores(performance=standing.score, innovation=int(data["innovation"]),
                      complexity=int(data["complexity"]),
                      rationale=rationale(standing, str(data["rationale"])),
                      llm=reply.usage)
