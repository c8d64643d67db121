"""The gallery on disk: one folder per trained experiment with its checkpoint, code, model card and loss curve.

Every file is written to a temporary name and renamed, so a crash never leaves a half-written entry, and a re-run
of the same event rewrites the same folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.analyst.comparison import markdown
from shared.events import ComparisonRow, CurvePoint, ReportSection, TrainSucceeded
from shared.memory_client import Experiment, TrainInfo


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


@dataclass(frozen=True)
class RunFacts:
    """The first seed's run, as its train.succeeded reported it (or memory keeps it)."""

    experiment_id: str
    campaign_id: str
    profile: str
    params: int
    tokens: int
    tokens_per_s: float
    device: str
    benchmarks: dict[str, float]
    checkpoint_path: str

    @classmethod
    def of(cls, run: TrainSucceeded) -> RunFacts:
        return cls(run.experiment_id, run.campaign_id, run.profile, run.params, run.tokens, run.tokens_per_s,
                   run.device, dict(run.benchmarks), run.checkpoint_path)

    @classmethod
    def of_memory(cls, experiment: Experiment, campaign_id: str) -> RunFacts:
        train = experiment.train or TrainInfo()
        return cls(experiment.id, campaign_id, experiment.profile, train.params, train.tokens, train.tokens_per_s,
                   train.device, dict(experiment.benchmarks), train.checkpoint_path)


@dataclass(frozen=True)
class Card:
    """What a model card says, each part once: the run's facts, the comparison table, the LLM's reading of it."""

    run: RunFacts
    name: str
    motivation: str
    rows: Sequence[ComparisonRow]
    signal_tasks: Sequence[str]
    sections: Sequence[ReportSection]
    removed: Sequence[str] = ()

    def markdown(self) -> str:
        run = self.run
        measured = self.rows[0] if self.rows else None
        lines = [f"# {self.name or run.experiment_id}", "",
                 f"Experiment `{run.experiment_id}`, campaign `{run.campaign_id}`, profile {run.profile}: "
                 f"{run.params:,} parameters, {run.tokens:,} tokens, {run.tokens_per_s:,.0f} tok/s on {run.device}.",
                 "", "## Motivation", "", self.motivation or "(none recorded)", "",
                 "## Measurements", "", markdown(self.rows, self.signal_tasks), ""]
        if measured is not None and measured.seeds > 1:
            lines += [f"Val loss and scores are means over {measured.seeds} seeds.", ""]
        lines += [self.benchmark_note(), ""]
        for section in self.sections:
            lines += [f"## {section.title}", "", section.body, ""]
        if self.removed:
            lines += ["## Removed from the analysis", "", "These statements of the LLM's report contradicted the "
                      "measurements or the diff, even after it was asked to correct them:", ""]
            lines += [f"- {statement}" for statement in self.removed] + [""]
        lines += ["## Files", "", "- `mixer.py`: the code that trained", "- `checkpoint.pt`: weights, model config "
                  "and run flags", "- `loss.png`: training loss against its parent and the profile's baselines", ""]
        return "\n".join(lines)

    def benchmark_note(self) -> str:
        """Every benchmark the run measured, with which of them count at this profile."""
        scores = ", ".join(f"{task} {score:.3f}" for task, score in sorted(self.run.benchmarks.items()))
        if not self.signal_tasks:
            return (f"Benchmarks: {scores or 'none'}. No task separates the baselines at this profile "
                    "beyond seed noise: the benchmark term of the fitness is neutral.")
        ignored = sorted(set(self.run.benchmarks) - set(self.signal_tasks))
        note = f" The others ({', '.join(ignored)}) do not separate the baselines here and carry no weight." \
            if ignored else ""
        return f"Benchmarks: {scores}. Counted in the fitness: {', '.join(self.signal_tasks)}.{note}"


def plot_curves(path: Path, curves: dict[str, Sequence[CurvePoint]],
                baseline_curves: dict[str, Sequence[CurvePoint]]) -> None:
    """The run and its parent in full lines, each baseline of the profile dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, curve in curves.items():
        if curve:
            ax.plot([p.tokens for p in curve], [p.loss for p in curve], label=label)
    for label, curve in baseline_curves.items():
        if curve:
            ax.plot([p.tokens for p in curve], [p.loss for p in curve], linestyle="--", linewidth=0.9, alpha=0.8,
                    label=f"{label} (baseline)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_entry(gallery: Path, card: Card, *, code: str, curves: dict[str, Sequence[CurvePoint]],
                baseline_curves: dict[str, Sequence[CurvePoint]]) -> Path:
    run = card.run
    folder = gallery / run.experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(run.checkpoint_path)
    if checkpoint.is_file():
        tmp = folder / "checkpoint.pt.tmp"
        shutil.copyfile(checkpoint, tmp)
        tmp.replace(folder / "checkpoint.pt")
    atomic_write(folder / "mixer.py", code)
    atomic_write(folder / "MODEL_CARD.md", card.markdown())
    plot_curves(folder / "loss.png", curves, baseline_curves)
    return folder
