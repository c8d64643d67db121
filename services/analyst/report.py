"""The analyst's report: the LLM interprets a comparison table built in code (comparison.py).

Numbers are never asked of the LLM. Its four sections are checked against the table and the diff; a report that
contradicts them is sent back once with the contradictions named, and what still contradicts them is removed (and
kept aside in the event) rather than handed to the researcher as a finding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template

from services.analyst.comparison import contradictions, facts, markdown
from shared.events import NEXT_STEPS_SECTION, ComparisonRow, LlmUsage, ReportSection
from shared.llm import LlmClient, Message
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
                  "next": NEXT_STEPS_SECTION}

SYSTEM = ("You analyse experiments on token mixers for small language models. You reason from the measured numbers "
          "and the code differences only, and you answer with JSON only.")

ANALYSE = Template("""\
Compare a new mixer with its relatives. Say what worked, what failed, why (tie each claim to a number or a code
change), and what to try next. Reply with JSON: {"what_worked": "...", "what_failed": "...", "why": "...",
"next": "..."}.

The new mixer "$name" finished training. Its motivation: $motivation

Measurements (val loss: lower is better, mean ± sd over seeds; task scores are accuracies$task_note):
$table

Established by the numbers and the diff (do not contradict these):
$facts

Code changes against its parent ($parent_name):
```diff
$diff
```
""")

RETRY = Template("""\
Your report contradicts the measurements:
$items
Write the report again, keeping to the numbers and the diff. Same JSON keys.""")


@dataclass(frozen=True)
class Report:
    sections: tuple[ReportSection, ...]
    usage: LlmUsage | None
    removed: tuple[str, ...]  # statements that still contradicted the table after one retry


def code_diff(parent_code: str, code: str, max_chars: int = 5000) -> str:
    return unified_diff(parent_code, code, "parent.py", "this.py")[:max_chars]


def _sections(data: dict[str, object]) -> tuple[ReportSection, ...]:
    return tuple(ReportSection(title=title, body=str(data[key]).strip()) for key, title in SECTION_TITLES.items())


def _all_contradictions(sections: Sequence[ReportSection], rows: Sequence[ComparisonRow],
                        diff: str) -> list[tuple[str, str]]:
    return [found for section in sections for found in contradictions(section.body, rows, diff)]


def _without(sections: Sequence[ReportSection], statements: set[str]) -> tuple[ReportSection, ...]:
    cleaned = []
    for section in sections:
        body = section.body
        for statement in statements:
            body = body.replace(statement, "")
        cleaned.append(ReportSection(title=section.title, body=" ".join(body.split()) or "(nothing that the "
                                     "measurements support)"))
    return tuple(cleaned)


def _add(total: LlmUsage | None, usage: LlmUsage | None) -> LlmUsage | None:
    if total is None or usage is None:
        return usage or total
    return LlmUsage(model=total.model, prompt_tokens=total.prompt_tokens + usage.prompt_tokens,
                    completion_tokens=total.completion_tokens + usage.completion_tokens,
                    latency_s=total.latency_s + usage.latency_s)


async def write_report(llm: LlmClient, *, name: str, motivation: str, rows: Sequence[ComparisonRow],
                       tasks: Sequence[str], parent_name: str, diff: str) -> Report:
    task_note = "; only the tasks that separate the baselines at this profile" if tasks else \
        "; no benchmark task separates the baselines at this profile beyond seed noise, so none is shown"
    prompt = ANALYSE.substitute(name=name, motivation=motivation[:1500], task_note=task_note,
                                table=markdown(rows, tasks), facts="\n".join(f"- {f}" for f in facts(rows, diff)),
                                parent_name=parent_name, diff=diff or "(no change from the parent's code)")
    messages: list[Message] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    reply = await llm.complete_json(messages, REPORT_SCHEMA, max_tokens=900, temperature=0.4)
    sections, usage = _sections(reply.data), reply.usage
    found = _all_contradictions(sections, rows, diff)
    if found:
        items = "\n".join(f'- you wrote "{statement}", but {truth}' for statement, truth in found)
        messages += [{"role": "assistant", "content": json.dumps(reply.data)},
                     {"role": "user", "content": RETRY.substitute(items=items)}]
        reply = await llm.complete_json(messages, REPORT_SCHEMA, max_tokens=900, temperature=0.2)
        sections, usage = _sections(reply.data), _add(usage, reply.usage)
        found = _all_contradictions(sections, rows, diff)
    removed = tuple(dict.fromkeys(statement for statement, _ in found))
    return Report(sections=_without(sections, set(removed)), usage=usage, removed=removed)
