"""Analyst's handler: a successful run gets a comparison report and a gallery entry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.analyst.gallery import write_entry
from services.analyst.report import Relative, write_report
from shared.bus import Delivery
from shared.events import AnalysisCreated, CurvePoint, Event, LlmUsage, ReportSection, TrainSucceeded, caused_by
from shared.llm import LlmClient, MalformedOutput
from shared.memory_client import Experiment, ExperimentWithLineage, MemoryClient, UnknownExperiment

log = logging.getLogger(__name__)
PRODUCER = "analyst"


@dataclass
class Analyst:
    llm: LlmClient
    memory: MemoryClient
    gallery: Path

    async def relatives(self, found: ExperimentWithLineage) -> tuple[Experiment | None, list[Relative]]:
        relatives: list[Relative] = []
        parent: Experiment | None = None
        if found.lineage.parents:
            parent_found = await self.memory.experiment(found.lineage.parents[0].id)
            if parent_found is not None:
                parent = parent_found.experiment
                relatives.append(Relative("parent", parent))
                relatives += [Relative("grandparent", g) for g in parent_found.lineage.parents[:1]]
        relatives += [Relative("sibling", s) for s in found.lineage.siblings[:4]]
        return parent, relatives

    async def report(self, run: TrainSucceeded, found: ExperimentWithLineage, parent: Experiment | None,
                     relatives: list[Relative]) -> tuple[tuple[ReportSection, ...], LlmUsage | None]:
        try:
            return await write_report(self.llm, run, found.experiment, parent, relatives)
        except MalformedOutput as exc:
            log.error("no usable report from the LLM for %s: %s", run.experiment_id, exc)
            return (ReportSection(title="Analysis unavailable", body=f"The LLM gave no valid report: {exc}"),), None


def curve_of(experiment: Experiment | None) -> list[CurvePoint]:
    if experiment is None or experiment.train is None:
        return []
    return [CurvePoint(step=s, tokens=t, loss=loss) for s, t, loss in experiment.train.curve if loss is not None]


def measurements(run: TrainSucceeded) -> ReportSection:
    lines = [f"profile {run.profile}, {run.params:,} parameters, {run.tokens:,} tokens, "
             f"{run.tokens_per_s:,.0f} tok/s on {run.device}",
             f"train loss {run.train_loss:.4f}, val loss {run.val_loss:.4f}"]
    lines += [f"{task}: {score:.4f}" for task, score in sorted(run.benchmarks.items())]
    return ReportSection(title="Measurements", body="\n".join(lines))


async def on_train_succeeded(analyst: Analyst, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, TrainSucceeded)
    found = await analyst.memory.experiment(event.experiment_id, as_of=delivery.stream_seq)
    if found is None:
        raise UnknownExperiment(f"memory has projected {event.experiment_id}'s training but knows no such "
                                   "experiment: nothing to analyse")
    parent, relatives = await analyst.relatives(found)
    sections, usage = await analyst.report(event, found, parent, relatives)
    sections = (measurements(event), *sections)
    curves = {"this run": list(event.curve), f"parent {parent.name}" if parent else "parent": curve_of(parent)}
    folder = await asyncio.to_thread(
        write_entry, analyst.gallery, event, name=found.experiment.name, motivation=found.experiment.motivation,
        code=found.experiment.code, sections=sections, curves=curves, baseline_losses={},
    )
    analysis = AnalysisCreated(**caused_by(event, PRODUCER), sections=sections,
                               compared_with=tuple(r.brief.id for r in relatives), gallery_path=str(folder), llm=usage)
    return (analysis,)
