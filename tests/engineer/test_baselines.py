"""Every baseline's fast (chunked) form matches its slow token-by-token reference, outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from shared.mixer.baselines import BASELINES, QUADRATIC, baseline_path, load_baseline
from shared.mixer.checks import check_complexity
from shared.mixer.contract import CheckFailed

# (batch, seq_len, d_model, n_heads, chunk_size): odd T, T < chunk, T a multiple of chunk, one head.
SHAPES = [(2, 37, 32, 2, 8), (1, 5, 16, 4, 16), (2, 16, 32, 4, 16), (1, 23, 24, 1, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-D{}-H{}-C{}".format(*s))
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_fast_matches_recurrent_reference(name: str, shape: tuple[int, int, int, int, int]) -> None:
    b, t, d, h, c = shape
    module = load_baseline(name)
    torch.manual_seed(0)
    kwargs = {} if name in QUADRATIC else {"chunk_size": c}
    mixer = module.Mixer(d, h, **kwargs).double()  # float64: differences are algorithmic, not rounding
    x = torch.randn(b, t, d, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(b, t, d, dtype=torch.float64)
    params = [x, *mixer.parameters()]

    fast = mixer(x)
    fast_grads = torch.autograd.grad((fast * weights).sum(), params)
    slow = module.recurrent_reference(mixer, x)
    slow_grads = torch.autograd.grad((slow * weights).sum(), params)

    assert fast.shape == (b, t, d)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-10)
    for fg, sg in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(fg, sg, rtol=1e-7, atol=1e-9)


def test_registry_files_are_self_contained() -> None:
    for name in BASELINES:
        source = baseline_path(name).read_text()
        imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import", "from"))}
        assert imports <= {"math", "typing", "torch"}, (name, imports)
        assert hasattr(load_baseline(name), "recurrent_reference")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_complexity_check_separates_quadratic_from_linear(name: str) -> None:
    cls = load_baseline(name).Mixer
    lengths = (256, 512, 1024)  # at width 64 the T^2 term already dominates here, and it is 4x cheaper
    if name in QUADRATIC:
        with pytest.raises(CheckFailed) as info:
            check_complexity(cls, 64, 4, lengths=lengths)
        assert info.value.kind == "complexity"
    else:
        measured = check_complexity(cls, 64, 4, lengths=lengths)
        assert measured["flops_exponent"] < 1.2 and measured["peak_bytes_exponent"] < 1.2, measured
