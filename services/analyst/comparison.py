"""The analyst's comparison table and the check of the LLM's report against it (docs/architecture.md §5).

The table (the run against its parent, grandparent, siblings and the profile's best baseline: val loss over seeds
and each task that carries signal) is built in code from the measurements: it is what the card shows and what
memory keeps. The LLM only interprets it, and a statement that contradicts it is caught here: a claim that the run
did better (or worse) than its parent when the table says otherwise beyond noise, or that it changed nothing when
the diff against its parent is not empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.events import ComparisonRow
from shared.memory_client import ExperimentBrief, ProfileBaselines
from shared.noise import Measured, compare

THIS_RUN = "this run"


@dataclass(frozen=True)
class Relative:
    role: str  # parent, grandparent, sibling, best baseline
    id: str
    name: str
    measured: Measured | None
    tasks: dict[str, float]
    profile: str = ""  # empty: the run's own

    @classmethod
    def of_experiment(cls, role: str, brief: ExperimentBrief, profile: str = "") -> Relative:
        """A relative; one trained at another profile than ``profile`` (a promotion's parent) is labelled so."""
        other = brief.profile if profile and brief.profile and brief.profile != profile else ""
        return cls(f"{role} (at {other})" if other else role, brief.id, brief.name or brief.id, brief.measured(),
                   dict(brief.benchmarks), other)

    @classmethod
    def of_baseline(cls, role: str, name: str, baselines: ProfileBaselines) -> Relative | None:
        mixer = baselines.mixer(name)
        if mixer is None:
            return None
        return cls(role, f"baseline:{name}", name, mixer.measured(), mixer.task_means(baselines.signal_tasks))


def comparison(run: Relative, relatives: Sequence[Relative], tasks: Sequence[str],
               floor: float | None) -> tuple[ComparisonRow, ...]:
    """The table: the run first, then each relative with how the run compares with it beyond noise."""
    rows = [_row(THIS_RUN, run, tasks, "")]
    for relative in relatives:
        # Losses at another profile are on another scale (another model size, tokenizer, budget): not compared.
        comparable = run.measured and relative.measured and not relative.profile
        verdict = compare(run.measured, relative.measured, floor) if comparable else None
        rows.append(_row(relative.role, relative, tasks, verdict or ""))
    return tuple(rows)


def _row(role: str, who: Relative, tasks: Sequence[str], run_is: str) -> ComparisonRow:
    m = who.measured
    return ComparisonRow(role=role, id=who.id, name=who.name, val_loss=m.mean if m else None,
                         val_loss_sd=m.sd if m else None, seeds=m.seeds if m else 0,
                         tasks={t: who.tasks[t] for t in tasks if t in who.tasks}, run_is=run_is)


def row_loss(row: ComparisonRow) -> str:
    if row.val_loss is None:
        return "-"
    return Measured(row.val_loss, row.val_loss_sd, max(1, row.seeds)).text()


def markdown(rows: Sequence[ComparisonRow], tasks: Sequence[str]) -> str:
    """The table as Markdown, for the prompt and the model card."""
    header = ["experiment", "role", "val loss (mean ± sd)", *tasks, "this run is"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        scores = [f"{row.tasks[t]:.3f}" if t in row.tasks else "-" for t in tasks]
        verdict = row.run_is + (" than it" if row.run_is in ("better", "worse") else "") if row.run_is else "-"
        lines.append("| " + " | ".join([row.name, row.role, row_loss(row), *scores, verdict]) + " |")
    return "\n".join(lines)


def changed_lines(diff: str) -> int:
    """Lines a unified diff adds or removes (its file headers not counted)."""
    return sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def facts(rows: Sequence[ComparisonRow], diff: str) -> list[str]:
    """What the table and the diff establish, in sentences the LLM is asked to keep to."""
    stated = []
    for row in rows[1:]:
        if row.run_is == "within noise":
            stated.append(f"Against its {row.role} {row.name} the run is within seed noise: no measurable "
                          "difference in val loss.")
        elif row.run_is:
            stated.append(f"Against its {row.role} {row.name} the run is {row.run_is} beyond seed noise "
                          f"({row_loss(rows[0])} vs {row_loss(row)}).")
    changed = changed_lines(diff)
    stated.append(f"The code differs from the parent's in {changed} changed lines." if changed
                  else "The code is the parent's, unchanged.")
    return stated


# --- checking the report ------------------------------------------------------------------------------------------

_BETTER = re.compile(r"\b(better|improv\w*|outperform\w*|lower (?:val(?:idation)? )?loss|loss (?:is |was )?lower|"
                     r"beat\w*|gain\w*|"
                     r"reduc\w* (?:the )?(?:val(?:idation)? )?loss)\b", re.I)
_WORSE = re.compile(r"\b(worse|degrad\w*|underperform\w*|higher (?:val(?:idation)? )?loss|loss (?:is |was )?higher|"
                    r"hurt\w*|regress\w*|"
                    r"increas\w* (?:the )?(?:val(?:idation)? )?loss)\b", re.I)
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|fail\w*|without)\b|n't\b", re.I)
_UNCHANGED = re.compile(r"\b(no (?:new )?(?:features?|changes?|modifications?)|did ?n[o']t (?:introduce|change|"
                        r"modify|add)|(?:is|was|remains?|stayed?) (?:unchanged|identical)|identical to (?:the|its) "
                        r"parent|same (?:code|architecture|design) as)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def claim(sentence: str) -> str | None:
    """Whether a sentence says the run did better or worse (a negated claim flips), or None."""
    better, worse = bool(_BETTER.search(sentence)), bool(_WORSE.search(sentence))
    if better == worse:
        return None
    said = "better" if better else "worse"
    if _NEGATION.search(sentence):
        return None if said == "worse" else "not better"
    return said


def contradictions(text: str, rows: Sequence[ComparisonRow], diff: str) -> list[tuple[str, str]]:
    """(statement, what the numbers say instead) for each sentence of ``text`` that the table or the diff
    contradicts. Only sentences about the parent are held to the parent's verdict."""
    parent = next((row for row in rows[1:] if row.role == "parent"), None)
    changed = changed_lines(diff) > 0
    found = []
    for sentence in (s.strip() for s in _SENTENCE.split(text) if s.strip()):
        if changed and _UNCHANGED.search(sentence):
            found.append((sentence, "the code differs from the parent's (see the diff)"))
            continue
        if parent is None or not parent.run_is or not re.search(r"\bparent\b|" + re.escape(parent.name), sentence,
                                                                re.I):
            continue
        said = claim(sentence)
        truth = parent.run_is
        if (said == "better" and truth != "better") or (said == "worse" and truth != "worse") or \
                (said == "not better" and truth == "better"):
            found.append((sentence, f"against its parent the run is {truth} "
                                    f"({row_loss(rows[0])} vs {row_loss(parent)})"))
    return found
