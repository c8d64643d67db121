"""Engineer: checks and trains proposed mixers in a sandbox, reports the outcome.

Its public face, for the command line (which trains and prepares data the same way the service does):
``ExperimentSpec``, ``run_experiment``, ``RunResult``, ``ProgressLine``, ``EngineerSettings``, the corpus's
``SOURCES``, ``install_commands``, ``prepare`` and ``data_problem``, a benchmark's ``chance_level``, and
``cpu_bf16`` (the precision runs take on this machine). Nothing
outside the engineer imports its modules directly. Names load on first use, so the sandboxed runner
(``python -m services.engineer.runner``) does not pay for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.engineer.data import SOURCES, data_problem, install_commands, prepare
    from services.engineer.evaluation import chance_level
    from services.engineer.experiment import ExperimentSpec, run_experiment
    from services.engineer.precision import cpu_bf16
    from services.engineer.result import ProgressLine, RunResult
    from services.engineer.service import EngineerSettings

_EXPORTS = {
    "ExperimentSpec": "services.engineer.experiment",
    "run_experiment": "services.engineer.experiment",
    "RunResult": "services.engineer.result",
    "ProgressLine": "services.engineer.result",
    "EngineerSettings": "services.engineer.service",
    "SOURCES": "services.engineer.data",
    "install_commands": "services.engineer.data",
    "prepare": "services.engineer.data",
    "data_problem": "services.engineer.data",
    "chance_level": "services.engineer.evaluation",
    "cpu_bf16": "services.engineer.precision",
}
__all__ = ["SOURCES", "EngineerSettings", "ExperimentSpec", "ProgressLine", "RunResult", "chance_level",
           "cpu_bf16", "data_problem", "install_commands", "prepare", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
