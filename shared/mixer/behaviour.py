"""The behaviour probe's signature: a mixer's outputs on a fixed input, so copies in disguise are recognised.

Runs candidate code: only inside the sandbox (the engineer's checks, ``shared.mixer.probe``'s child).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from shared.mixer.contract import CheckFailed, build_mixer, call_mixer

# Two mixers whose outputs agree this closely on the probe compute the same function (float noise of the same
# operations differs by ~1e-7; any real change to the computation moves outputs by far more).
SAME_BEHAVIOUR_RTOL = 1e-4
SAME_BEHAVIOUR_ATOL = 1e-5
# Every parameter with a fixed initial value is nudged by this much random noise before probing, so a new branch
# whose gate is initialised to zero (silent at init, learnt later) still shows in the outputs.
PROBE_PERTURBATION = 0.02


def behaviour_signature(cls: Callable[..., nn.Module], d_model: int, n_heads: int) -> list[float]:
    """A fixed sample of the mixer's outputs on a fixed input, with parameters set from a seed.

    A copy that only renames, reformats, reorders helpers or adds dead code computes the same outputs; a real
    change does not. Only the parameters forward uses are set, each from the same seeded stream in the order the
    module lists them, so a layer created but never used changes nothing (it would otherwise shift the stream).
    Randomly initialised parameters are redrawn, since a dead layer created first also shifts torch's own
    initialisation; parameters with a fixed initial value (ones, zeros, a decay schedule) keep it, nudged.
    (A copy that creates its live parameters in another order is not recognised: this errs towards training a
    duplicate, never towards rejecting a new idea.)
    """
    mixer = build_mixer(cls, d_model, n_heads)
    twin = build_mixer(cls, d_model, n_heads, seed=1)  # what differs from it was drawn at random
    x = torch.randn(2, 24, d_model, generator=torch.Generator().manual_seed(4321))
    noise = torch.Generator().manual_seed(1234)
    live = used_parameters(mixer, x)
    with torch.no_grad():
        for (name, parameter), twin_parameter in zip(mixer.named_parameters(), twin.parameters(), strict=True):
            if name not in live or not parameter.is_floating_point():
                continue
            draw = torch.randn(parameter.shape, generator=noise, dtype=parameter.dtype)
            if torch.equal(parameter, twin_parameter):
                parameter.add_(draw * PROBE_PERTURBATION)
            else:
                parameter.copy_(draw / math.sqrt(parameter[0].numel() if parameter.dim() > 1 else parameter.numel()))
        out = call_mixer(mixer, x)
    return [float(v) for v in out[:, ::5, :8].reshape(-1)]


def used_parameters(mixer: nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the parameters a forward pass reaches (those a backward pass gives a gradient)."""
    with torch.enable_grad():
        out = call_mixer(mixer, x)
        if not out.requires_grad:  # no parameter reaches the output (or there is none)
            return set()
        out.float().square().sum().backward()
    used = {name for name, p in mixer.named_parameters() if p.grad is not None}
    mixer.zero_grad(set_to_none=True)
    return used


def same_behaviour(a: list[float], b: list[float]) -> bool:
    if len(a) != len(b) or not a:
        return False
    left, right = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return bool(torch.allclose(left, right, rtol=SAME_BEHAVIOUR_RTOL, atol=SAME_BEHAVIOUR_ATOL))


def check_distinct(signature: list[float], known: dict[str, list[float]]) -> None:
    """Fail as a duplicate when the signature matches a known mixer's (label -> signature)."""
    for label, other in known.items():
        if same_behaviour(signature, other):
            raise CheckFailed(
                "duplicate",
                f"its outputs equal {label}'s on a fixed probe (within rtol {SAME_BEHAVIOUR_RTOL:g}): the same "
                "computation as an existing mixer, so training it would measure nothing new",
            )
