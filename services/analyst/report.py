"""The analyst's report: a quasi-ablation against parent, grandparent and siblings, written by the LLM.

The context is a table of measured numbers and the code diff against the parent; the LLM writes four sections.
Numbers are never asked of the LLM: the measurements section is built in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from shared.events import LlmUsage, ReportSection, TrainSucceeded
from shared.llm import LlmClient
from shared.memory_client import Experiment, ExperimentBrief
from shared.mixer.edit import unified_diff

REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        # maxLength: the grammar then closes each string in time (see the judge's schema).
        "what_worked": {"type": "string", "maxLength": 600},
        "what_failed": {"type": "string", "maxLength": 600},
        "why": {"type": "string", "maxLength": 600},
        "next": {"type": "string", "maxLength": 600, "description": "one or two concrete changes to try next"},
    },
    "required": ["what_worked", "what_failed", "why", "next"],
}
SECTION_TITLES = {"what_worked": "What worked", "what_failed": "What failed", "why": "Why",
                  "next": "What to try next"}

SYSTEM = ("You analyse experiments on token mixers for small language models. You reason from the measured numbers "
          "and the code differences only, and you answer with JSON only.")

ANALYSE = Template("""\
A new mixer "$name" finished training. Its motivation: $motivation

Measurements (lower loss is better; benchmark scores are accuracies):
$table

Code changes against its parent ($parent_name):
```diff
$diff
```

Compare it with its relatives. Say what worked, what failed, why (tie each claim to a number or a code change),
and what to try next. Reply with JSON: {"what_worked": "...", "what_failed": "...", "why": "...", "next": "..."}.
""")


@dataclass(frozen=True)
class Relative:
    role: str  # parent, grandparent, sibling
    brief: ExperimentBrief


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def comparison_table(run: TrainSucceeded, relatives: list[Relative]) -> str:
    bench_mean = sum(run.benchmarks.values()) / len(run.benchmarks) if run.benchmarks else None
    rows = ["| experiment | role | val loss | benchmark mean | fitness |", "|---|---|---|---|---|",
            f"| {run.experiment_id} | this run | {fmt(run.val_loss)} | {fmt(bench_mean)} | - |"]
    rows += [f"| {r.brief.name or r.brief.id} | {r.role} | {fmt(r.brief.val_loss)} | {fmt(r.brief.bench_mean)} "
             f"| {fmt(r.brief.fitness)} |" for r in relatives]
    return "\n".join(rows)


def code_diff(parent_code: str, code: str, max_chars: int = 5000) -> str:
    diff = unified_diff(parent_code, code, "parent.py", "this.py")
    return diff[:max_chars] or "(no parent code to compare with)"


async def write_report(
    llm: LlmClient, run: TrainSucceeded, experiment: Experiment, parent: Experiment | None, relatives: list[Relative]
) -> tuple[tuple[ReportSection, ...], LlmUsage]:
    prompt = ANALYSE.substitute(
        name=experiment.name or run.experiment_id, motivation=experiment.motivation[:1500],
        table=comparison_table(run, relatives), parent_name=parent.name if parent else "a baseline",
        diff=code_diff(parent.code if parent else "", experiment.code),
    )
    reply = await llm.complete_json([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                    REPORT_SCHEMA, max_tokens=900, temperature=0.4)
    sections = tuple(ReportSection(title=title, body=str(reply.data[key]).strip())
                     for key, title in SECTION_TITLES.items())
    return sections, reply.usage
