"""Each measured check catches a mixer written to fail it; the baselines pass them all (but softmax)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from shared.mixer.baselines import BASELINES, baseline_path
from shared.mixer.behaviour import behaviour_signature, same_behaviour
from shared.mixer.checks import check_batch, check_causality, check_mixing, check_syntax, run_checks
from shared.mixer.contract import CheckFailed, build_mixer, check_signature
from shared.mixer.loader import load_module
from shared.mixer.profiles import PROFILES

BAD_MIXERS = Path(__file__).parent / "fixtures" / "bad_mixers"

SMOKE = PROFILES["smoke"]


@pytest.mark.parametrize(
    ("fixture", "kind", "says"),
    [
        ("peek_future.py", "causality", "perturbing inputs at positions >="),
        ("softmax_quadratic.py", "complexity", "flops grows as T^"),
        ("shape_bug.py", "contract", "returned shape"),
        ("makes_nan.py", "nan", "NaN/Inf"),
    ],
)
def test_bad_mixer_fails_its_check(fixture: str, kind: str, says: str) -> None:
    report = run_checks(BAD_MIXERS / fixture, SMOKE)
    assert not report.passed
    assert report.kind == kind, report.message
    assert says in report.message


def test_linear_baseline_passes_every_check() -> None:
    report = run_checks(baseline_path("linear_attention"), SMOKE)
    assert report.passed, report.message
    assert report.measurements["flops_exponent"] < 1.2
    assert SMOKE.param_range[0] <= report.measurements["params"] <= SMOKE.param_range[1]


def test_syntax_error_is_reported_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("class Mixer(nn.Module:\n    pass\n")
    report = run_checks(bad, SMOKE)
    assert report.kind == "syntax" and "line 1" in report.message
    with pytest.raises(CheckFailed):
        check_syntax("def f(:\n")


def test_missing_mixer_and_wrong_signatures_are_contract_failures(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("import torch\n")
    assert run_checks(empty, SMOKE).kind == "contract"

    class NoHeads(nn.Module):
        def __init__(self, d_model: int) -> None:
            super().__init__()

    class TwoInputs(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return x

    for cls in (NoHeads, TwoInputs, object):
        with pytest.raises(CheckFailed) as info:
            check_signature(cls)
        assert info.value.kind == "contract"


class _BatchNormMixer(nn.Module):
    """Normalises with statistics over the batch: each output depends on the other samples."""

    def __init__(self, d_model: int, n_heads: int, **kwargs: Any) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x).cumsum(dim=1)
        return h - h.mean(dim=0, keepdim=True)


def test_a_mixer_that_dropped_its_mixing_path_is_no_token_mixer(tmp_path: Path) -> None:
    # A skip-path move whose forward step replaced the return: the recurrence is computed, then thrown away.
    source = BASELINES["gated_deltanet"].read_text()
    norm = "        self.head_norm = nn.RMSNorm(self.head_dim)\n"
    dropped = (source.replace("        return self._output(o.to(x.dtype), x)\n", "        return self.skip * x\n")
               .replace(norm, norm + "        self.skip = nn.Parameter(torch.zeros(d_model))\n"))
    assert dropped.count("self.skip") == 2
    path = tmp_path / "mixer.py"
    path.write_text(dropped)
    report = run_checks(path, SMOKE)
    assert not report.passed and report.kind == "contract" and "no token mixer" in report.message, report.message
    assert "(`o` (line 66, in forward) assigned and never read)" in report.message  # where the path was dropped


def test_a_mixing_path_that_starts_closed_still_mixes() -> None:
    class ZeroOutput(nn.Module):  # a zero-initialised output projection: the output is 0 until it trains
        def __init__(self, d_model: int, n_heads: int) -> None:
            super().__init__()
            self.o_proj = nn.Linear(d_model, d_model)
            nn.init.zeros_(self.o_proj.weight)
            nn.init.zeros_(self.o_proj.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o_proj(torch.cumsum(x, dim=1))

    mixer = build_mixer(ZeroOutput, 32, 2)
    assert check_mixing(mixer, 32)["mixing_diff"] > 0
    assert not mixer.o_proj.weight.any() and not mixer.o_proj.bias.any()  # the perturbation was undone


def test_batch_dependence_is_caught() -> None:
    mixer = build_mixer(_BatchNormMixer, 32, 2)
    check_causality(mixer, 32)  # causal along time, so only the batch check can catch it
    with pytest.raises(CheckFailed) as info:
        check_batch(mixer, 32)
    assert info.value.kind == "batch"


def test_params_out_of_range() -> None:
    tiny_range = SMOKE.with_overrides(param_range=(1, 1000))
    report = run_checks(baseline_path("linear_attention"), tiny_range)
    assert report.kind == "params" and "allowed 1..1,000" in report.message


def test_gradient_leak_is_caught() -> None:
    """A leak only through gradients: the forward value is causal, the backward is not."""

    class GradLeak(nn.Module):
        def __init__(self, d_model: int, n_heads: int, **kwargs: Any) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            future_sum = x.sum(dim=1, keepdim=True)
            return x.cumsum(dim=1) + future_sum - future_sum.detach()  # value unchanged, gradient leaks

    with pytest.raises(CheckFailed) as info:
        check_causality(build_mixer(GradLeak, 16, 2), 16)
    assert info.value.kind == "causality" and "d out" in info.value.message


GLA = BASELINES["gla"].read_text()
# Renamed helpers, a reflowed signature and dead code: the same computation.
COSMETIC_GLA = (GLA.replace("_project", "_projections").replace("chunked_gla", "chunked_gated_attention")
                .replace("gate_rank: int = 16, gate_norm", "gate_rank: int = 16,\n        gate_norm")
                + "\n\ndef unused(x: torch.Tensor) -> torch.Tensor:\n    return x * 2\n")
# A layer and a parameter created (first, so they shift torch's random stream) but never used: still GLA.
DEAD_LAYER_GLA = GLA.replace("        super().__init__()\n", "        super().__init__()\n"
                             "        self.unused = nn.Linear(d_model, d_model)\n"
                             "        self.shift_mix = nn.Parameter(torch.full((d_model,), 0.5))\n", 1)
# A new branch whose gate starts at zero: silent at init, so only perturbed parameters reveal it.
ZERO_GATED_GLA = (GLA.replace("        self.head_norm = nn.RMSNorm(self.head_dim)\n",
                              "        self.head_norm = nn.RMSNorm(self.head_dim)\n"
                              "        self.skip_gate = nn.Parameter(torch.zeros(d_model))\n")
                  .replace("        return self._output(o.to(x.dtype), x)\n",
                           "        return self._output(o.to(x.dtype), x) + self.skip_gate * x\n"))


def signature_of(code: str, tmp_path: Path, name: str) -> list[float]:
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    return behaviour_signature(load_module(path).Mixer, SMOKE.d_model, SMOKE.n_heads)


def test_behaviour_tells_a_cosmetic_copy_from_a_real_change(tmp_path: Path) -> None:
    assert COSMETIC_GLA != GLA and ZERO_GATED_GLA.count("skip_gate") == 2
    original = signature_of(GLA, tmp_path, "original")
    assert same_behaviour(signature_of(COSMETIC_GLA, tmp_path, "cosmetic"), original)
    assert DEAD_LAYER_GLA.count("self.unused") == 1
    assert same_behaviour(signature_of(DEAD_LAYER_GLA, tmp_path, "dead_layer"), original)
    assert not same_behaviour(signature_of(ZERO_GATED_GLA, tmp_path, "zero_gated"), original)
    assert same_behaviour(signature_of(GLA, tmp_path, "again"), original)  # deterministic


def test_a_mixer_without_parameters_has_a_behaviour_too(tmp_path: Path) -> None:
    running_mean = ("import torch\nfrom torch import nn\n\nclass Mixer(nn.Module):\n"
                    "    def __init__(self, d_model, n_heads, **kwargs):\n        super().__init__()\n\n"
                    "    def forward(self, x):\n"
                    "        return x.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)\n")
    signature = signature_of(running_mean, tmp_path, "running_mean")
    assert len(signature) > 0 and same_behaviour(signature, signature_of(running_mean, tmp_path, "again"))


def test_every_baseline_behaves_unlike_every_other(tmp_path: Path) -> None:
    signatures = {name: signature_of(path.read_text(), tmp_path, name) for name, path in BASELINES.items()}
    for name, signature in signatures.items():
        assert [other for other, theirs in signatures.items() if same_behaviour(signature, theirs)] == [name]


def test_a_copy_fails_as_a_duplicate_naming_what_it_copies(tmp_path: Path) -> None:
    path = tmp_path / "copy.py"
    path.write_text(COSMETIC_GLA)
    known = {"the gla baseline": signature_of(GLA, tmp_path, "gla")}
    report = run_checks(path, SMOKE, distinct_from=known)
    assert (report.passed, report.kind) == (False, "duplicate") and "the gla baseline" in report.message
    path.write_text(ZERO_GATED_GLA)
    report = run_checks(path, SMOKE, distinct_from=known)
    assert report.passed, report.message
    assert len(report.behaviour) == 2 * 5 * 8
