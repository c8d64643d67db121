"""Built-in baseline mixers, each a single file in the exact form a candidate takes (the mixer contract).

The registry maps a name to its file path; `load_baseline` imports the file by path, the same way a
candidate is imported, so the baselines exercise the same loading code. Importing our own files in the
service process is fine: they are ours, not generated code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from shared.mixer.loader import load_module

BASELINE_DIR = Path(__file__).resolve().parent

BASELINES: dict[str, Path] = {
    "softmax_attention": BASELINE_DIR / "softmax_attention.py",
    "linear_attention": BASELINE_DIR / "linear_attention.py",
    "retnet": BASELINE_DIR / "retnet.py",
    "gla": BASELINE_DIR / "gla.py",
    "deltanet": BASELINE_DIR / "deltanet.py",
    "gated_deltanet": BASELINE_DIR / "gated_deltanet.py",
    "mamba2": BASELINE_DIR / "mamba2.py",
}

# The quadratic reference; every other baseline must pass the sub-quadratic check.
QUADRATIC = frozenset({"softmax_attention"})
# The efficiency gate times a candidate's training step against this one's, side by side: the slowest built-in
# sub-quadratic baseline (measured on 2 CPU cores, one thread, steps against linear attention's: gated_deltanet
# 1.70x at smoke and 1.35x at cpu, the most of all; on a GPU the delta-rule family is the slowest too), so that no
# built-in design can fail the gate, while a Python loop over tokens still does.
EFFICIENCY_REFERENCE = "gated_deltanet"


# How a proposal names a built-in baseline as its parent (an experiment id otherwise).
BASELINE_REF_PREFIX = "baseline:"


def baseline_ref(name: str) -> str:
    return f"{BASELINE_REF_PREFIX}{baseline_path(name).stem}"


def baseline_of_ref(ref: str) -> str | None:
    """The baseline a parent reference names, or None when it names an experiment (or no known baseline)."""
    name = ref.removeprefix(BASELINE_REF_PREFIX)
    return name if ref.startswith(BASELINE_REF_PREFIX) and name in BASELINES else None


def baseline_path(name: str) -> Path:
    try:
        return BASELINES[name]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}") from None


def load_baseline(name: str) -> ModuleType:
    """Import a baseline file as module `asiarch_baseline_<name>` (cached in sys.modules)."""
    module_name = f"asiarch_baseline_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    return load_module(baseline_path(name), module_name)
