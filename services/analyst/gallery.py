"""The gallery on disk: one folder per trained experiment with its checkpoint, code, model card and loss curve.

Every file is written to a temporary name and renamed, so a crash never leaves a half-written entry, and a re-run
of the same event rewrites the same folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from shared.events import CurvePoint, ReportSection, TrainSucceeded


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


def model_card(run: TrainSucceeded, name: str, motivation: str, sections: Sequence[ReportSection]) -> str:
    lines = [f"# {name or run.experiment_id}", "", f"Experiment `{run.experiment_id}`, campaign `{run.campaign_id}`.",
             "", "## Motivation", "", motivation or "(none recorded)", "",
             "## Measurements", "", "| metric | value |", "|---|---|",
             f"| profile | {run.profile} |", f"| parameters | {run.params:,} |", f"| tokens | {run.tokens:,} |",
             f"| train loss | {run.train_loss:.4f} |", f"| val loss | {run.val_loss:.4f} |",
             f"| throughput | {run.tokens_per_s:,.0f} tok/s on {run.device} |"]
    lines += [f"| {task} | {score:.4f} |" for task, score in sorted(run.benchmarks.items())]
    lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", section.body, ""]
    lines += ["## Files", "", "- `mixer.py`: the code that trained", "- `checkpoint.pt`: weights, model config "
              "and run flags", "- `loss.png`: training loss against its parent", ""]
    return "\n".join(lines)


def plot_curves(path: Path, curves: dict[str, Sequence[CurvePoint]], baseline_losses: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, curve in curves.items():
        if curve:
            ax.plot([p.tokens for p in curve], [p.loss for p in curve], label=label)
    for label, loss in baseline_losses.items():
        ax.axhline(loss, linestyle="--", linewidth=0.8, label=f"{label} (val)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_entry(gallery: Path, run: TrainSucceeded, *, name: str, motivation: str, code: str,
                sections: Sequence[ReportSection], curves: dict[str, Sequence[CurvePoint]],
                baseline_losses: dict[str, float]) -> Path:
    folder = gallery / run.experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(run.checkpoint_path)
    if checkpoint.is_file():
        tmp = folder / "checkpoint.pt.tmp"
        shutil.copyfile(checkpoint, tmp)
        tmp.replace(folder / "checkpoint.pt")
    atomic_write(folder / "mixer.py", code)
    atomic_write(folder / "MODEL_CARD.md", model_card(run, name, motivation, sections))
    plot_curves(folder / "loss.png", curves, baseline_losses)
    return folder
