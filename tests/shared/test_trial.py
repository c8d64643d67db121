"""The trial the debugger tries patches in: the engineer's checks plus what they cannot see on a CPU, sandboxed,
with what a failure showed (the failing line's locals, the first NaN's site)."""

from __future__ import annotations

import pytest

from shared.mixer.baselines import BASELINES
from shared.mixer.trial import STAGES, TrialOutcome, try_mixer

pytestmark = pytest.mark.slow

HEAD = ("import torch\nimport torch.nn as nn\n\n\nclass Mixer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, **kwargs):\n        super().__init__()\n"
        "        self.proj = nn.Linear(d_model, d_model)\n        self.rate = nn.Linear(d_model, d_model)\n\n"
        "    def forward(self, x):\n")


def test_a_baseline_passes_every_stage() -> None:
    outcome = try_mixer(BASELINES["deltanet"].read_text(), "smoke", device_check=True, stress=True)
    assert outcome.passed, outcome.summary()
    assert 0 < outcome.measurements["step_ratio"] < 3


def test_a_raising_line_comes_with_its_locals() -> None:
    code = HEAD + "        b, t, d = x.shape\n        y = self.proj(x).transpose(1, 2)\n" \
                  "        return y.view(b, t, d)\n"
    outcome = try_mixer(code, "smoke")
    assert outcome.stage == "contract" and outcome.kind == "runtime" and "view size" in outcome.message
    assert 'mixer.py", line 14, in forward' in outcome.traceback
    # T=1 passed (a view of one position is contiguous); T=2 raised.
    assert "y: Tensor(2, 128, 2) float32 cpu, not contiguous" in outcome.locals and "t: 2" in outcome.locals


def test_a_cpu_tensor_fails_the_device_stage_only_when_asked() -> None:
    code = HEAD + "        counts = torch.arange(1, x.shape[1] + 1).view(1, -1, 1)\n" \
                  "        return torch.cumsum(self.proj(x), 1) / counts\n"
    assert try_mixer(code, "smoke").passed
    on_gpu = try_mixer(code, "smoke", device_check=True)
    assert on_gpu.stage == "device" and "device=x.device" in on_gpu.message
    assert 'line 13, in forward' in on_gpu.traceback and "counts: Tensor(1, 33, 1) int64 cpu" in on_gpu.locals


def test_an_overflowing_decay_fails_the_stress_with_the_first_nan_site() -> None:
    code = HEAD + "        decay = torch.exp(torch.cumsum(self.rate(x), 1))\n" \
                  "        return torch.cumsum(self.proj(x) / decay, 1) * decay / x.shape[1]\n"
    outcome = try_mixer(code, "smoke", stress=True)
    assert outcome.stage == "stress" and outcome.kind == "nan"
    assert "aten.exp" in outcome.nan_site and "line 12: `decay = torch.exp(" in outcome.nan_site


def test_stages_order_how_far_a_mixer_got() -> None:
    assert TrialOutcome(stage="causality").progress > TrialOutcome(stage="contract").progress
    assert TrialOutcome(stage="passed").progress > TrialOutcome(stage="training").progress
    assert STAGES[-1] == "passed" and not TrialOutcome(stage="training").passed
