"""The mixer contract (docs/architecture.md §3): what a candidate file must define and how
it is built and called. Used by the engineer's checks and by the behaviour probe, both inside the sandbox.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shared.events import CHECK_FAILURE_KINDS
from shared.mixer.sandbox import MEMORY_MARKERS


class CheckFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        if kind not in CHECK_FAILURE_KINDS:
            raise ValueError(f"unknown check kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def failure_kind(exc: BaseException) -> str:
    """``memory`` for an allocation the candidate was refused, whichever exception carried it (torch reports a
    refused CPU allocation as a plain ``RuntimeError``), else ``runtime``."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "memory"
    return "memory" if any(marker in f"{type(exc).__name__}: {exc}" for marker in MEMORY_MARKERS) else "runtime"


def check_signature(cls: Any) -> None:
    """`class Mixer(nn.Module)` with `__init__(d_model, n_heads, **kwargs)` and `forward(x)`."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise CheckFailed("contract", "the file must define `class Mixer(torch.nn.Module)`")
    for method, args in (("__init__", (None, 64, 4)), ("forward", (None, None))):
        try:
            inspect.signature(getattr(cls, method)).bind(*args)
        except TypeError as exc:
            wanted = "__init__(self, d_model, n_heads, **kwargs)" if method == "__init__" else "forward(self, x)"
            raise CheckFailed("contract", f"Mixer.{method} cannot be called as {wanted}: {exc}") from exc


def build_mixer(cls: Callable[..., nn.Module], d_model: int, n_heads: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    try:
        mixer = cls(d_model, n_heads)
    except Exception as exc:  # the candidate's own error: its traceback travels as this failure's cause
        raise CheckFailed(failure_kind(exc), f"Mixer({d_model}, {n_heads}) raised {exc!r}") from exc
    if not isinstance(mixer, nn.Module):
        raise CheckFailed("contract", f"Mixer(...) returned {type(mixer).__name__}, not an nn.Module")
    return mixer.eval()  # eval: dropout would make the comparisons below meaningless


def call_mixer(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward with the contract enforced: same shape and dtype out as in."""
    try:
        out = mixer(x)
    except Exception as exc:  # the candidate's own error: its traceback travels as this failure's cause
        raise CheckFailed(failure_kind(exc), f"forward on input {tuple(x.shape)} raised {exc!r}") from exc
    if not isinstance(out, torch.Tensor):
        raise CheckFailed("contract", f"forward returned {type(out).__name__}, expected a Tensor (B, T, d_model)")
    if out.shape != x.shape:
        raise CheckFailed("contract", f"forward on input {tuple(x.shape)} returned shape {tuple(out.shape)}")
    if out.dtype != x.dtype:
        raise CheckFailed("contract", f"forward on {x.dtype} input returned {out.dtype}")
    return out

