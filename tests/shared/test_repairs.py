"""Each mechanical repair on a mixer with the bug it is for: the trial (the engineer's checks, sandboxed) fails the
broken mixer, and the repair the failure calls for passes it."""

from __future__ import annotations

import pytest

from shared.mixer.repairs import Failure, candidate_repairs
from shared.mixer.trial import try_mixer

pytestmark = pytest.mark.slow

HEAD = "import torch\nimport torch.nn as nn\n\n\nclass Mixer(nn.Module):\n"
INIT = ("    def __init__(self, d_model, n_heads, **kwargs):\n        super().__init__()\n"
        "        self.heads = n_heads\n        self.proj = nn.Linear(d_model, d_model)\n")
COUNTS = "torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)"


def mixer(forward: str, init: str = INIT, head: str = HEAD) -> str:
    return head + init + "\n    def forward(self, x):\n" + forward


BROKEN = {
    "a standard import": mixer(f"        y = torch.cumsum(self.proj(x), 1) / {COUNTS}\n"
                               "        return F.gelu(y)\n"),
    "a parameter its parent created": mixer(
        "        rate = -self.A_log.exp() * nn.functional.softplus(self.a_proj(x) + self.dt_bias)\n"
        "        gate = torch.sigmoid(rate).repeat_interleave(x.shape[-1] // self.heads, -1)\n"
        f"        return torch.cumsum(gate * self.proj(x), 1) / {COUNTS}\n",
        INIT + "        self.a_proj = nn.Linear(d_model, n_heads, bias=False)\n"),
    "a misspelt attribute": mixer(f"        return torch.cumsum(self.projection(x), 1) / {COUNTS}\n"),
    "a view after a transpose": mixer(
        "        b, t, d = x.shape\n        y = self.proj(x).view(b, t, self.heads, -1).transpose(1, 2)\n"
        f"        y = torch.cumsum(y, 2) / {COUNTS}.unsqueeze(1)\n"
        "        return y.transpose(1, 2).view(b, t, d)\n"),
    "a dtype mismatch": mixer(
        "        scale = torch.ones(x.shape[-1], dtype=torch.float64)\n"
        "        return torch.cumsum(self.proj(x) * scale, 1) / x.shape[1]\n"),
    "a CPU tensor on another device": mixer(
        "        counts = torch.arange(1, x.shape[1] + 1).view(1, -1, 1)\n"
        "        return torch.cumsum(self.proj(x), 1) / counts\n"),
    "a layer's input width": mixer(
        f"        return self.out(torch.cumsum(self.proj(x), 1) / {COUNTS})\n",
        INIT + "        self.out = nn.Linear(4 * d_model, d_model)\n"),
    "a head size": mixer(
        "        b, t, d = x.shape\n        y = self.proj(x).reshape(b, t, self.heads, self.size)\n"
        f"        y = torch.cumsum(y, 1) / {COUNTS}.unsqueeze(-1)\n        return y.reshape(b, t, d)\n",
        INIT + "        self.size = 2 * d_model // n_heads\n"),
    "a mask's triangle": mixer(
        "        b, t, d = x.shape\n        pad = (-t) % 8\n"
        "        v = nn.functional.pad(self.proj(x), (0, 0, 0, pad)).reshape(b, -1, 8, d)\n"
        "        mask = torch.triu(torch.ones(8, 8, device=x.device))\n"
        "        y = (mask / mask.sum(-1, keepdim=True)) @ v\n"
        "        return y.reshape(b, -1, d)[:, :t]\n"),
    "a reduction over the batch": mixer(
        "        v = self.proj(x)\n        v = v / v.norm(dim=0, keepdim=True)\n"
        f"        return torch.cumsum(v, 1) / {COUNTS}\n"),
    "a convolution padded on both sides": mixer(
        f"        t = x.shape[1]\n        y = self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2)\n"
        f"        return torch.cumsum(self.proj(y), 1) / {COUNTS}\n",
        INIT + "        self.conv = nn.Conv1d(d_model, d_model, 3, groups=d_model, padding=1)\n"),
    "an exponential that overflows": mixer(
        "        w = torch.exp(torch.cumsum(self.proj(x), 1))\n"
        "        return torch.cumsum(w * x, 1) / torch.cumsum(w, 1)\n"),
    "a parameter its __init__ dropped": mixer(
        f"        return torch.cumsum(self.proj(x), 1) / {COUNTS} * self.scale\n",
        INIT + "        self.scale = chunk_size / 64\n"),
    "a stray line reading a name nothing assigned": mixer(
        f"        y = torch.cumsum(self.proj(x), 1) / {COUNTS}\n"
        "        u = u - torch.min(u, 1).values\n"
        "        return y\n"),
    "a zero denominator": mixer(
        "        v = self.proj(x)\n        energy = torch.cumsum(v * v, 1) - torch.cumsum(v * v, 1)\n"
        "        return torch.cumsum(v, 1) / torch.sqrt(energy)\n"),
}


@pytest.mark.parametrize("bug", list(BROKEN))
def test_the_repair_for_the_error_passes_the_checks(bug: str) -> None:
    code = BROKEN[bug]
    device_check = "device" in bug
    failed = try_mixer(code, "smoke", device_check=device_check, stress=True)
    assert not failed.passed, bug
    failure = Failure(code, failed.kind, failed.message, failed.traceback, failed.nan_site, 128, 4)
    repairs = candidate_repairs(failure)
    assert repairs, f"no repair offered for {bug}: {failed.summary()}"
    tried = []
    for repair in repairs:  # in order, as the debugger tries them: the first that passes is the one sent
        outcome = try_mixer(repair.code, "smoke", device_check=device_check, stress=True)
        tried.append((repair.what, outcome.summary()))
        if outcome.passed:
            break
    assert outcome.passed, tried
    assert repair.what  # each repair says what it did


def test_repairs_never_offer_the_code_unchanged_or_broken() -> None:
    code = BROKEN["a mask's triangle"]
    failure = Failure(code, "causality", "outputs see the future", "")
    repairs = candidate_repairs(failure)
    assert repairs and all(r.code.strip() != code.strip() for r in repairs)
    assert candidate_repairs(Failure(code, "runtime", "something no repair knows", "")) == []
    # Code that does not parse, or a traceback naming a line it does not have, trips no repair.
    assert candidate_repairs(Failure("class Mixer(:\n", "syntax", "line 1: invalid syntax", "")) == []
    assert candidate_repairs(Failure(code, "runtime", "mat1 and mat2 shapes cannot be multiplied (2x4 and 8x4)",
                                     'File "/runs/mixer.py", line 99, in forward', d_model=4, n_heads=1)) == []


def test_a_statement_is_dropped_only_when_nothing_reads_what_it_assigns() -> None:
    def offered(forward: str, message: str) -> list[str]:
        code = mixer(forward)
        line = next(n for n, text in enumerate(code.splitlines(), 1) if "gate" in text or " u " in text)
        traceback = f'File "/runs/mixer.py", line {line}, in forward'
        return [r.code for r in candidate_repairs(Failure(code, "runtime", message, traceback))]

    unbound = "cannot access local variable 'u' where it is not associated with a value"
    kept = "        u = u * 2\n        return self.proj(x) + u\n"  # what it assigns is used: not stray
    assert not any("u = u" not in code for code in offered(kept, unbound))
    stray = "        y = self.proj(x)\n        u = u * 2\n        return y\n"
    assert any("u = u" not in code and "return y" in code for code in offered(stray, unbound))
    undefined = "        y = self.proj(x)\n        z = gate * y\n        return y\n"
    assert any("gate" not in code for code in offered(undefined, "name 'gate' is not defined"))
    into_state = "        y = self.proj(x)\n        self.cache = gate * y\n        return y\n"  # outlives the call
    assert not any("gate" not in code for code in offered(into_state, "name 'gate' is not defined"))
