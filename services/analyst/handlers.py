"""Analyst's handler: a successful run gets a gallery entry and a report."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from shared.bus import Delivery
from shared.events import AnalysisCreated, Event, ReportSection, TrainSucceeded, caused_by

PRODUCER = "analyst"


def metrics_section(run: TrainSucceeded) -> ReportSection:
    lines = [
        f"- profile: {run.profile}, params: {run.params:,}, tokens: {run.tokens:,}",
        f"- final train loss {run.train_loss:.4f}, val loss {run.val_loss:.4f}",
        f"- {run.tokens_per_s:,.0f} tok/s on {run.device}",
    ]
    lines += [f"- {task}: {score:.4f}" for task, score in sorted(run.benchmarks.items())]
    return ReportSection(title="Measurements", body="\n".join(lines))


def write_gallery_entry(gallery: Path, run: TrainSucceeded, sections: Sequence[ReportSection]) -> Path:
    """Write the model card; the folder name is the experiment id, so a re-run overwrites the same entry."""
    folder = gallery / run.experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    card = [f"# Experiment {run.experiment_id}", ""]
    for section in sections:
        card += [f"## {section.title}", "", section.body, ""]
    card += [f"Checkpoint: `{run.checkpoint_path}`", ""]
    tmp = folder / "MODEL_CARD.md.tmp"
    tmp.write_text("\n".join(card))
    tmp.replace(folder / "MODEL_CARD.md")
    return folder


async def on_train_succeeded(gallery: Path, event: Event, delivery: Delivery) -> Sequence[Event]:
    assert isinstance(event, TrainSucceeded)
    sections = (metrics_section(event),)
    folder = await asyncio.to_thread(write_gallery_entry, gallery, event, sections)
    return (AnalysisCreated(**caused_by(event, PRODUCER), sections=sections, compared_with=(),
                            gallery_path=str(folder)),)
