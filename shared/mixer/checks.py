"""Measured checks on a candidate mixer (docs/architecture.md §4). Each failure names its kind and what was measured.

The checks that execute candidate code (everything but `check_syntax`) must run inside the sandboxed
child process; `run_checks` is the entry point used there.
"""

from __future__ import annotations

import ast
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from shared.mixer.behaviour import behaviour_signature, check_distinct
from shared.mixer.contract import CheckFailed, build_mixer, call_mixer, check_signature, failure_kind
from shared.mixer.loader import MixerFactory
from shared.mixer.model import LanguageModel, count_parameters, model_config
from shared.mixer.profiles import Profile
from shared.mixer.source import unread_assignments

# Fitted log-log exponent above which a mixer counts as quadratic. Linear mixers measure ~1.0, softmax
# attention ~1.8-2.0 at the lengths below; 1.5 sits in the middle of that gap.
COMPLEXITY_THRESHOLD = 1.5
COMPLEXITY_LENGTHS = (512, 1024, 2048)
COMPLEXITY_MAX_WIDTH = 128  # quadratic terms dominate once T >> d, so a narrow mixer shows them sooner


@dataclass
class CheckReport:
    passed: bool
    kind: str | None = None
    message: str = ""
    measurements: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    behaviour: list[float] = field(default_factory=list)
    # What was raised when a check failed, kept so the candidate's own traceback travels with the failure.
    error: BaseException | None = field(default=None, repr=False, compare=False)

    def raise_for_failure(self) -> None:
        if not self.passed:
            raise CheckFailed(self.kind or "runtime", self.message) from self.error


# ───────────────────────────── syntax and contract ─────────────────────────────


def check_syntax(source: str, filename: str = "<candidate>") -> None:
    try:
        ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise CheckFailed("syntax", f"line {exc.lineno}: {exc.msg}") from exc


def check_lengths(mixer: nn.Module, d_model: int, lengths: tuple[int, ...] = (1, 2, 7, 33, 65, 130)) -> None:
    """Any T must work, including odd lengths and ones that are not a multiple of a chunk size."""
    for t in lengths:
        call_mixer(mixer, torch.randn(2, t, d_model))


# ───────────────────────────── numerics, causality, batch ─────────────────────────────


def check_numerics(mixer: nn.Module, d_model: int, seq_len: int = 77) -> None:
    x = torch.randn(2, seq_len, d_model, requires_grad=True)
    out = call_mixer(mixer, x)
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        raise CheckFailed("nan", f"{bad} of {out.numel()} outputs are NaN/Inf on a standard-normal input")
    out.square().mean().backward()
    grads = {"input": x.grad} | {name: p.grad for name, p in mixer.named_parameters() if p.grad is not None}
    for name, grad in grads.items():
        if grad is not None and not torch.isfinite(grad).all():
            raise CheckFailed("nan", f"gradient of {name} has NaN/Inf on a standard-normal input")
    mixer.zero_grad(set_to_none=True)


def _tolerance(reference: torch.Tensor, rel: float) -> float:
    return rel * (1.0 + reference.abs().max().item())


def check_causality(mixer: nn.Module, d_model: int, seq_len: int = 77) -> dict[str, float]:
    """Perturbing inputs at positions >= t must change neither outputs nor gradients at positions < t."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, seq_len, d_model, generator=gen)
    with torch.no_grad():
        base = call_mixer(mixer, x)
    worst = 0.0
    for t in sorted({1, seq_len // 3, seq_len // 2 + 1, seq_len - 1}):
        x2 = x.clone()
        x2[:, t:] += 3.0 * torch.randn(x2[:, t:].shape, generator=gen)
        with torch.no_grad():
            diff = (call_mixer(mixer, x2)[:, :t] - base[:, :t]).abs()
        worst = max(worst, diff.max().item())
        if diff.max().item() > _tolerance(base, 1e-4):
            first = int(diff.amax(dim=(0, 2)).gt(_tolerance(base, 1e-4)).nonzero()[0])
            raise CheckFailed(
                "causality",
                f"perturbing inputs at positions >= {t} changed the output at position {first} < {t} "
                f"by {diff.max().item():.3g} (T={seq_len}); a mixer may only look at the past",
            )
        xg = x.clone().requires_grad_(True)
        call_mixer(mixer, xg)[:, :t].sum().backward()
        assert xg.grad is not None
        leak = xg.grad[:, t:].abs().max().item()
        if leak > _tolerance(xg.grad, 1e-6):
            raise CheckFailed(
                "causality",
                f"d out[:, :{t}] / d x[:, {t}:] = {leak:.3g} (should be 0): outputs before {t} depend on later inputs",
            )
        mixer.zero_grad(set_to_none=True)
    return {"causality_max_diff": worst}


def check_mixing(mixer: nn.Module, d_model: int, seq_len: int = 77, unread: Sequence[str] = ()) -> dict[str, float]:
    """The last position's output must depend on earlier inputs: a token mixer that computes each position from
    its own input alone is a per-token layer (a change that dropped the mixing path: ``return self.skip * x``
    trained to a lower smoke loss than every baseline, by being no mixer at all).

    Measured with every parameter perturbed (and restored after), so that a design whose mixing path starts
    closed (a zero-initialised projection or gate) still shows it; a perturbation that makes the output
    non-finite proves nothing either way and passes. ``unread``: the source's values assigned and never read
    (``unread_assignments``), named in the failure as where the mixing path was likely dropped."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, seq_len, d_model, generator=gen)
    x2 = x.clone()
    x2[:, :-1] += 3.0 * torch.randn(x2[:, :-1].shape, generator=gen)
    saved = [(p, p.detach().clone()) for p in mixer.parameters()]
    try:
        with torch.no_grad():
            for p, _ in saved:
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.dtype))
            last, moved = call_mixer(mixer, x)[:, -1], call_mixer(mixer, x2)[:, -1]
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
    if not (torch.isfinite(last).all() and torch.isfinite(moved).all()):
        return {"mixing_diff": math.nan}
    diff = (moved - last).abs().max().item()
    if diff <= _tolerance(last, 1e-5):
        raise CheckFailed(
            "contract",
            f"changing every input before position {seq_len - 1} left its output unchanged ({diff:.3g}, T={seq_len}), "
            "with the parameters perturbed too: each position is computed from its own input alone, so this is no "
            "token mixer; the mixing path (the recurrence, the state, the attention) must reach the returned value"
            + (f" ({', '.join(unread)} assigned and never read)" if unread else ""),
        )
    return {"mixing_diff": diff}


def check_batch(mixer: nn.Module, d_model: int, seq_len: int = 45, batch: int = 3) -> dict[str, float]:
    """Each sample's output must not depend on the other samples in the batch."""
    x = torch.randn(batch, seq_len, d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = call_mixer(mixer, x)
        alone = torch.cat([call_mixer(mixer, x[i : i + 1]) for i in range(batch)])
    diff = (together - alone).abs().max().item()
    if diff > _tolerance(together, 1e-4):
        raise CheckFailed(
            "batch",
            f"output for a batch of {batch} differs from per-sample outputs by {diff:.3g}: samples leak into "
            "each other (batch statistics, mixing over dim 0?)",
        )
    return {"batch_max_diff": diff}


# ───────────────────────────── params ─────────────────────────────


def check_params(factory: MixerFactory, profile: Profile, vocab_size: int | None = None) -> dict[str, int]:
    """Total model parameters at the profile's size must fall inside its range."""
    config = model_config(profile, vocab_size)
    try:
        with torch.device("meta"):  # count without allocating (verify is 340 M params)
            model = LanguageModel(config, factory)
    except (NotImplementedError, RuntimeError):  # a mixer whose __init__ computes on its tensors needs real ones
        model = LanguageModel(config, factory)
    total, mixer = count_parameters(model), model.mixer_parameters()
    low, high = profile.param_range
    if not low <= total <= high:
        raise CheckFailed(
            "params",
            f"model has {total:,} parameters ({mixer:,} in the {config.n_layers} mixers) at profile "
            f"{profile.name!r}; allowed {low:,}..{high:,}",
        )
    return {"params": total, "mixer_params": mixer}


# ───────────────────────────── complexity ─────────────────────────────


class _WorkAndMemory(TorchDispatchMode):
    """Counts elements written by every op (elementwise work FLOP counters miss) and peak live tensor bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage address -> [bytes, live tensor objects]

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            self.elements += t.numel()
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self._refs:
                self._refs[key] = [storage.nbytes(), 0]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self._refs[key][1] += 1
            weakref.finalize(t, self._release, key)
        return out


def _fit_exponent(lengths: tuple[int, ...], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(T)."""
    xs = [math.log(t) for t in lengths]
    ys = [math.log(max(v, 1.0)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)


def measure_scaling(mixer: nn.Module, d_model: int, lengths: tuple[int, ...]) -> dict[str, list[float]]:
    flops, elements, peak = [], [], []
    for t in lengths:
        x = torch.randn(1, t, d_model)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                call_mixer(mixer, x)
            flops.append(float(counter.get_total_flops()))
            tracker = _WorkAndMemory()
            with tracker:
                call_mixer(mixer, x)
        elements.append(float(tracker.elements))
        peak.append(float(tracker.peak))
    return {"flops": flops, "elements": elements, "peak_bytes": peak}


def check_complexity(
    cls: Callable[..., nn.Module], d_model: int, n_heads: int, lengths: tuple[int, ...] = COMPLEXITY_LENGTHS,
    threshold: float = COMPLEXITY_THRESHOLD,
) -> dict[str, Any]:
    """Fit how matmul FLOPs, elementwise work and peak memory grow with T; all must stay sub-quadratic."""
    width = d_model
    if d_model > COMPLEXITY_MAX_WIDTH and COMPLEXITY_MAX_WIDTH % n_heads == 0:
        width = COMPLEXITY_MAX_WIDTH
    curves = measure_scaling(build_mixer(cls, width, n_heads), width, lengths)
    exponents = {name: _fit_exponent(lengths, values) for name, values in curves.items()}
    measurements: dict[str, Any] = {"complexity_lengths": list(lengths), "complexity_width": width}
    measurements |= {f"{name}_exponent": round(e, 3) for name, e in exponents.items()}
    measurements |= {f"{name}_by_length": values for name, values in curves.items()}
    over = {name: e for name, e in exponents.items() if e > threshold}
    if over:
        detail = ", ".join(
            f"{name} grows as T^{e:.2f} ({curves[name][0]:.3g} → {curves[name][-1]:.3g})" for name, e in over.items()
        )
        raise CheckFailed(
            "complexity",
            f"{detail} over T={list(lengths)} at d_model={width}; limit is T^{threshold} (must be sub-quadratic)",
        )
    return measurements


# ───────────────────────────── behaviour ─────────────────────────────

# ───────────────────────────── orchestration ─────────────────────────────


def run_checks(source_path: str | Path, profile: Profile, vocab_size: int | None = None,
               distinct_from: dict[str, list[float]] | None = None,
               on_phase: Callable[[str], None] | None = None) -> CheckReport:
    """Run every pre-training check on the file; stops at the first failure. Runs candidate code: sandbox only.

    With ``distinct_from`` (label -> behaviour signature), a mixer that behaves like one of them fails as a
    duplicate; the report carries the mixer's own signature either way once the other checks passed.
    ``on_phase`` hears the name of each check as it starts (the run's heartbeat says where a hang happened)."""
    from shared.mixer.loader import load_module  # executes the file

    phase = on_phase or (lambda name: None)
    start = time.perf_counter()
    report = CheckReport(passed=True)
    try:
        phase("syntax")
        source = Path(source_path).read_text(encoding="utf-8")
        check_syntax(source, str(source_path))
        phase("import")
        try:
            module = load_module(source_path)
        except Exception as exc:
            raise CheckFailed(failure_kind(exc), f"importing the file raised {exc!r}") from exc
        cls = getattr(module, "Mixer", None)
        check_signature(cls)
        d, h = profile.d_model, profile.n_heads
        phase("contract")
        mixer = build_mixer(cls, d, h)
        check_lengths(mixer, d)
        phase("numerics")
        check_numerics(mixer, d)
        phase("causality")
        report.measurements |= check_causality(mixer, d)
        report.measurements |= check_mixing(mixer, d, unread=unread_assignments(source))
        phase("batch")
        report.measurements |= check_batch(mixer, d)
        phase("params")
        report.measurements |= check_params(lambda dm, nh: cls(dm, nh), profile, vocab_size)
        phase("complexity")
        report.measurements |= check_complexity(cls, d, h)
        phase("behaviour")
        report.behaviour = behaviour_signature(cls, d, h)
        check_distinct(report.behaviour, distinct_from or {})
    except CheckFailed as exc:
        report.passed, report.kind, report.message, report.error = False, exc.kind, exc.message, exc
    except Exception as exc:  # raised by the candidate inside a check that does not wrap it
        report.passed, report.kind, report.message, report.error = False, failure_kind(exc), f"{exc!r}", exc
    report.seconds = time.perf_counter() - start
    return report
