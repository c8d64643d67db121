"""Candidates built from the baselines for tests that need one that trains and is not a duplicate."""

from __future__ import annotations

from shared.mixer.baselines import BASELINES


def gla_variant() -> str:
    """GLA with a stronger gate normalisation: it trains like GLA but computes something else."""
    code = BASELINES["gla"].read_text()
    changed = code.replace("gate_norm: float = 16.0", "gate_norm: float = 8.0")
    assert changed != code, "the GLA baseline no longer has the default this variant changes"
    return changed
