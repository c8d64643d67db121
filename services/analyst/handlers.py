"""Analyst's handlers: a successful run gets a comparison table, a report checked against it, and a gallery entry;
a replicate's second seed updates the table and the card (no LLM call)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.analyst.comparison import Relative, comparison
from services.analyst.gallery import Card, RunFacts, write_entry
from services.analyst.report import Report, code_diff, write_report
from shared.bus import Delivery
from shared.events import (
    AnalysisCreated,
    ComparisonRow,
    CurvePoint,
    Event,
    ReplicateTrained,
    ReportSection,
    TrainSucceeded,
    caused_by,
)
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import (
    BaselineRun,
    ExperimentWithLineage,
    MemoryClient,
    NotYetProjected,
    ProfileBaselines,
)
from shared.mixer.baselines import BASELINES, baseline_of_ref

log = logging.getLogger(__name__)
PRODUCER = "analyst"
MAX_SIBLINGS = 4


@dataclass(frozen=True)
class Relatives:
    """Who the run is compared with, and the parent's code and curve."""

    rows: tuple[Relative, ...]
    parent_name: str
    parent_code: str
    parent_curve: list[CurvePoint]


def _curve(points: Sequence[tuple[int, int, float | None]]) -> list[CurvePoint]:
    return [CurvePoint(step=s, tokens=t, loss=loss) for s, t, loss in points if loss is not None]


def _first_curve(runs: dict[str, BaselineRun]) -> list[CurvePoint]:
    return next((_curve(run.curve) for _, run in sorted(runs.items()) if run.curve), [])


@dataclass
class Analyst:
    llm: LlmClient
    memory: MemoryClient
    gallery: Path

    async def relatives(self, found: ExperimentWithLineage, baselines: ProfileBaselines) -> Relatives:
        rows: list[Relative] = []
        profile = found.experiment.profile
        name, code, curve = "a baseline", "", []
        if found.lineage.parents:
            parent = found.lineage.parents[0]
            rows.append(Relative.of_experiment("parent", parent, profile))
            name = parent.name or parent.id
            parent_found = await self.memory.experiment(parent.id)
            if parent_found is not None:
                code = parent_found.experiment.code
                curve = _curve(parent_found.experiment.train.curve) if parent_found.experiment.train else []
                rows += [Relative.of_experiment("grandparent", g, profile) for g in parent_found.lineage.parents[:1]]
        elif (baseline := next(filter(None, map(baseline_of_ref, found.lineage.missing_parents)), None)) is not None:
            name, code = baseline, BASELINES[baseline].read_text() if baseline in BASELINES else ""
            if (relative := Relative.of_baseline("parent", baseline, baselines)) is not None:
                rows.append(relative)
            mixer = baselines.mixer(baseline)
            curve = _first_curve(mixer.runs) if mixer else []
        rows += [Relative.of_experiment("sibling", s, profile) for s in found.lineage.siblings
                 if s.val_loss is not None][:MAX_SIBLINGS]
        best = baselines.best()
        if best is not None and f"baseline:{best.mixer}" not in {r.id for r in rows}:
            rows += [r for r in [Relative.of_baseline("best baseline", best.mixer, baselines)] if r is not None]
        return Relatives(tuple(rows), name, code, curve)

    async def report(self, found: ExperimentWithLineage, table: tuple[ComparisonRow, ...], tasks: list[str],
                     relatives: Relatives, diff: str) -> Report:
        experiment = found.experiment
        try:
            return await write_report(self.llm, name=experiment.name or experiment.id,
                                      motivation=experiment.motivation, rows=table, tasks=tasks,
                                      parent_name=relatives.parent_name, diff=diff)
        except MalformedOutput as exc:
            log.error("no usable report from the LLM for %s: %s", experiment.id, exc)
            unavailable = ReportSection(title="Analysis unavailable", body=f"The LLM gave no valid report: {exc}")
            return Report(sections=(unavailable,), usage=None, removed=())

    async def table(self, found: ExperimentWithLineage, profile: str) -> tuple[
            tuple[ComparisonRow, ...], ProfileBaselines, Relatives]:
        baselines = await self.memory.baselines(profile)
        relatives = await self.relatives(found, baselines)
        run = Relative.of_experiment("this run", found.experiment)
        rows = comparison(run, relatives.rows, baselines.signal_tasks, baselines.noise_sd)
        return rows, baselines, relatives

    async def write(self, card: Card, found: ExperimentWithLineage, baselines: ProfileBaselines,
                    relatives: Relatives, curve: Sequence[CurvePoint]) -> Path:
        curves = {"this run": list(curve), f"parent {relatives.parent_name}": relatives.parent_curve}
        baseline_curves = {m.mixer: _first_curve(m.runs) for m in baselines.mixers}
        return await asyncio.to_thread(write_entry, self.gallery, card, code=found.experiment.code, curves=curves,
                                       baseline_curves=baseline_curves)


async def on_train_succeeded(analyst: Analyst, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, TrainSucceeded)
    found = await analyst.memory.known_experiment(event.experiment_id, delivery.stream_seq, "analyse")
    rows, baselines, relatives = await analyst.table(found, event.profile)
    diff = code_diff(relatives.parent_code, found.experiment.code)
    report = await analyst.report(found, rows, baselines.signal_tasks, relatives, diff)
    card = Card(run=RunFacts.of(event), name=found.experiment.name, motivation=found.experiment.motivation,
                rows=rows, signal_tasks=baselines.signal_tasks, sections=report.sections, removed=report.removed)
    folder = await analyst.write(card, found, baselines, relatives, event.curve)
    return (AnalysisCreated(**caused_by(event, PRODUCER), sections=report.sections,
                            compared_with=tuple(row.id for row in rows[1:]), gallery_path=str(folder),
                            llm=report.usage, comparison=rows, signal_tasks=tuple(baselines.signal_tasks),
                            removed_statements=report.removed),)


async def on_replicate_trained(analyst: Analyst, event: Event, delivery: Delivery) -> Sequence[Event]:
    """Another seed changes the run's mean and spread: the table and the card follow, the report stays."""
    assert isinstance(event, ReplicateTrained)
    found = await analyst.memory.known_experiment(event.experiment_id, delivery.stream_seq, "analyse")
    analysis = found.experiment.analysis
    if analysis is None:
        # The analyst handles a run's training before its replicate; memory may not have projected that yet.
        raise NotYetProjected(f"{event.experiment_id}'s analysis is not in memory yet")
    rows, baselines, relatives = await analyst.table(found, event.profile)
    sections = tuple(ReportSection(title=s.title, body=s.body) for s in analysis.sections)
    card = Card(run=RunFacts.of_memory(found.experiment, event.campaign_id), name=found.experiment.name,
                motivation=found.experiment.motivation, rows=rows, signal_tasks=baselines.signal_tasks,
                sections=sections, removed=tuple(analysis.removed_statements))
    train = found.experiment.train
    folder = await analyst.write(card, found, baselines, relatives, _curve(train.curve) if train else [])
    return (AnalysisCreated(**caused_by(event, PRODUCER), sections=sections,
                            compared_with=tuple(row.id for row in rows[1:]), gallery_path=str(folder),
                            comparison=rows, signal_tasks=tuple(baselines.signal_tasks),
                            removed_statements=tuple(analysis.removed_statements)),)
