"""Measured checks on a candidate mixer (DESIGN §4). Each failure names its kind and what was measured.

The checks that execute candidate code (everything but `check_syntax`) must run inside the sandboxed
child process; `run_checks` is the entry point used there.
"""

from __future__ import annotations

import ast
import inspect
import math
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from services.engineer.model import LanguageModel, MixerFactory, count_parameters
from services.engineer.profiles import Profile

CHECK_KINDS = frozenset(
    {"syntax", "contract", "causality", "complexity", "params", "batch", "efficiency", "nan", "timeout",
     "memory", "runtime", "duplicate"}
)
# Fitted log-log exponent above which a mixer counts as quadratic. Linear mixers measure ~1.0, softmax
# attention ~1.8-2.0 at the lengths below; 1.5 sits in the middle of that gap.
COMPLEXITY_THRESHOLD = 1.5
COMPLEXITY_LENGTHS = (512, 1024, 2048)
COMPLEXITY_MAX_WIDTH = 128  # quadratic terms dominate once T >> d, so a narrow mixer shows them sooner


class CheckFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown check kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass
class CheckReport:
    passed: bool
    kind: str | None = None
    message: str = ""
    measurements: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    behaviour: list[float] = field(default_factory=list)

    def raise_for_failure(self) -> None:
        if not self.passed:
            raise CheckFailed(self.kind or "runtime", self.message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ───────────────────────────── syntax and contract ─────────────────────────────


def check_syntax(source: str, filename: str = "<candidate>") -> None:
    try:
        ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise CheckFailed("syntax", f"line {exc.lineno}: {exc.msg}") from exc


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
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise CheckFailed("memory", f"Mixer({d_model}, {n_heads}) ran out of memory: {exc}") from exc
    except Exception as exc:
        raise CheckFailed("runtime", f"Mixer({d_model}, {n_heads}) raised {exc!r}\n{_tail()}") from exc
    if not isinstance(mixer, nn.Module):
        raise CheckFailed("contract", f"Mixer(...) returned {type(mixer).__name__}, not an nn.Module")
    return mixer.eval()  # eval: dropout would make the comparisons below meaningless


def call_mixer(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward with the contract enforced: same shape and dtype out as in."""
    try:
        out = mixer(x)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise CheckFailed("memory", f"forward on input {tuple(x.shape)} ran out of memory: {exc}") from exc
    except Exception as exc:
        raise CheckFailed("runtime", f"forward on input {tuple(x.shape)} raised {exc!r}\n{_tail()}") from exc
    if not isinstance(out, torch.Tensor):
        raise CheckFailed("contract", f"forward returned {type(out).__name__}, expected a Tensor (B, T, d_model)")
    if out.shape != x.shape:
        raise CheckFailed("contract", f"forward on input {tuple(x.shape)} returned shape {tuple(out.shape)}")
    if out.dtype != x.dtype:
        raise CheckFailed("contract", f"forward on {x.dtype} input returned {out.dtype}")
    return out


def check_lengths(mixer: nn.Module, d_model: int, lengths: tuple[int, ...] = (1, 2, 7, 33, 65, 130)) -> None:
    """Any T must work, including odd lengths and ones that are not a multiple of a chunk size."""
    for t in lengths:
        call_mixer(mixer, torch.randn(2, t, d_model))


def _tail() -> str:
    return traceback.format_exc(limit=-4)


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
    config = profile.model_config(vocab_size)
    try:
        with torch.device("meta"):  # count without allocating (verify is 340 M params)
            model = LanguageModel(config, factory)
    except Exception:
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


# ───────────────────────────── orchestration ─────────────────────────────


def run_checks(source_path: str | Path, profile: Profile, vocab_size: int | None = None,
               distinct_from: dict[str, list[float]] | None = None) -> CheckReport:
    """Run every pre-training check on the file; stops at the first failure. Runs candidate code: sandbox only.

    With ``distinct_from`` (label -> behaviour signature), a mixer that behaves like one of them fails as a
    duplicate; the report carries the mixer's own signature either way once the other checks passed."""
    from services.engineer.candidate import load_module  # executes the file

    start = time.perf_counter()
    report = CheckReport(passed=True)
    try:
        check_syntax(Path(source_path).read_text(encoding="utf-8"), str(source_path))
        try:
            module = load_module(source_path)
        except Exception as exc:
            raise CheckFailed("runtime", f"importing the file raised {exc!r}\n{_tail()}") from exc
        cls = getattr(module, "Mixer", None)
        check_signature(cls)
        d, h = profile.d_model, profile.n_heads
        mixer = build_mixer(cls, d, h)
        check_lengths(mixer, d)
        check_numerics(mixer, d)
        report.measurements |= check_causality(mixer, d)
        report.measurements |= check_batch(mixer, d)
        report.measurements |= check_params(lambda dm, nh: cls(dm, nh), profile, vocab_size)
        report.measurements |= check_complexity(cls, d, h)
        report.behaviour = behaviour_signature(cls, d, h)
        check_distinct(report.behaviour, distinct_from or {})
    except CheckFailed as exc:
        report.passed, report.kind, report.message = False, exc.kind, exc.message
    except (torch.OutOfMemoryError, MemoryError) as exc:
        report.passed, report.kind, report.message = False, "memory", f"{exc!r}"
    except Exception as exc:
        report.passed, report.kind, report.message = False, "runtime", f"{exc!r}\n{_tail()}"
    report.seconds = time.perf_counter() - start
    return report
