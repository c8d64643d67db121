"""How a mixer is judged, where it is not the LLM's call (docs/architecture.md §7): the performance score derived
in code from what was measured, the weights of the three scores, and the built-in designs' fixed innovation and
complexity (the anchors the judge's LLM scores a new design against, and what a baseline is scored as).

A language model reading "val loss 5.038 (parent 4.958)" gave it 9/10; a number that a comparison of two numbers
decides is not the LLM's to give. Where a run falls among the profile's baselines sets its score: the worst
baseline (highest mean val loss) anchors at 3, the best at 7, linearly in loss between them; beyond either end a
point per ``NOISE_SIGMAS`` combined seed sd, within 1–10. Against its parent, in units of the seed noise: worse
beyond noise scores at least a point below the parent's own score, better beyond noise at least a point above,
and within noise the parent's score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from shared.noise import NOISE_SIGMAS, Measured, combined_noise, compare

# The judge's weighted score; the LLM gives innovation and complexity, never the weighted sum.
WEIGHTS = {"performance": 0.3, "innovation": 0.25, "complexity": 0.45}

# How the built-in designs score on the two scales the LLM judges, so they mean the same from one judgement to the
# next. Their performance is not a fixed opinion: it is where their measured loss falls (``performance``).
ANCHORS: dict[str, tuple[str, int, int]] = {  # baseline -> (description, innovation, complexity)
    "linear_attention": ("linear attention (elu+1, no decay)", 2, 9),
    "retnet": ("RetNet retention (fixed per-head decay)", 4, 8),
    "gla": ("GLA (data-dependent gates)", 6, 6),
    "deltanet": ("DeltaNet (delta rule)", 7, 6),
    "gated_deltanet": ("Gated DeltaNet (gated delta rule)", 8, 5),
    "mamba2": ("Mamba2-like SSD", 7, 6),
    "softmax_attention": ("softmax attention (quadratic, the upper reference)", 3, 4),
}
# A design with no anchor sits mid-scale.
UNANCHORED = 5

WORST_BASELINE, BEST_BASELINE = 3.0, 7.0
LOWEST, HIGHEST = 1, 10
# With one baseline measured there is no span to place a run in: that baseline is the middle of the scale.
ONLY_BASELINE = 5.0


@dataclass(frozen=True)
class Standing:
    score: int
    reason: str


def position(loss: float, baselines: Mapping[str, Measured], floor: float | None) -> float:
    """The unrounded score of a mean val loss among the baselines' mean val losses (lower loss, higher score)."""
    if not math.isfinite(loss):
        return LOWEST
    if not baselines:
        return ONLY_BASELINE
    best = min(baselines.values(), key=lambda m: m.mean)
    worst = max(baselines.values(), key=lambda m: m.mean)
    per_point = NOISE_SIGMAS * (floor or best.sd or 0.0) or abs(best.mean) * 0.01  # no spread known: 1 % of the loss
    if worst.mean == best.mean:
        value = ONLY_BASELINE + (best.mean - loss) / per_point
    elif loss <= best.mean:
        value = BEST_BASELINE + (best.mean - loss) / per_point
    elif loss >= worst.mean:
        value = WORST_BASELINE - (loss - worst.mean) / per_point
    else:
        value = WORST_BASELINE + (BEST_BASELINE - WORST_BASELINE) * (worst.mean - loss) / (worst.mean - best.mean)
    return min(float(HIGHEST), max(float(LOWEST), value))


def weighted(performance: int, innovation: int, complexity: int) -> float:
    """The judge's weighted score of three 1–10 scores."""
    scores = {"performance": performance, "innovation": innovation, "complexity": complexity}
    return sum(weight * scores[name] for name, weight in WEIGHTS.items())


def anchor_of(mixer: str) -> tuple[str, int, int]:
    """A built-in design's (description, innovation, complexity); mid-scale for one with no anchor."""
    return ANCHORS.get(mixer, (mixer, UNANCHORED, UNANCHORED))


def score_of(loss: float, baselines: Mapping[str, Measured], floor: float | None) -> int:
    return round(position(loss, baselines, floor))


def performance(run: Measured, parent: Measured | None, baselines: Mapping[str, Measured],
                floor: float | None, parent_name: str = "the parent") -> Standing:
    """The run's 1–10 performance score, and why, in numbers."""
    score = score_of(run.mean, baselines, floor)
    reason = [f"val loss {run.text()}"]
    if baselines:
        best = min(baselines, key=lambda name: baselines[name].mean)
        worst = max(baselines, key=lambda name: baselines[name].mean)
        reason.append(f"baselines from {worst} {baselines[worst].mean:.4f} (score {WORST_BASELINE:g}) to {best} "
                      f"{baselines[best].mean:.4f} (score {BEST_BASELINE:g})")
    if parent is not None:
        parent_score = score_of(parent.mean, baselines, floor)
        verdict = compare(run, parent, floor)
        if verdict == "worse":
            score = max(LOWEST, min(score, parent_score - 1))
        elif verdict == "better":
            score = min(HIGHEST, max(score, parent_score + 1))
        elif verdict == "within noise":  # told apart from its parent by nothing but noise: scored as the parent
            score = parent_score
        noise = combined_noise(run, parent, floor)
        units = f", {abs(parent.mean - run.mean) / noise:.1f} combined sd" if noise else ""
        relation = {"better": "better than", "worse": "worse than", "within noise": "within noise of",
                    None: "not comparable (no seed noise known) with"}[verdict]
        reason.append(f"{relation} {parent_name} {parent.text()} (score {parent_score}){units}")
    return Standing(score=score, reason="; ".join(reason))
