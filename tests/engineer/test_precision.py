"""The CPU precision: measured once per machine and profile, cached, and what a bf16 run reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.engineer import precision
from services.engineer.precision import CACHE_FILE, cache_key, cpu_bf16
from services.engineer.trainer import train
from shared.mixer.baselines import load_baseline
from tests.engineer.test_trainer import TINY


def test_the_verdict_is_measured_once_then_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = TINY.with_overrides(cpu_bf16=True)
    first = cpu_bf16(profile, 1, tmp_path)
    cached = json.loads((tmp_path / CACHE_FILE).read_text())[cache_key(profile, 1)]
    assert cached["bf16"] is first and cached["fp32_step_s"] > 0 and cached["bf16_step_s"] > 0

    def no_second_measurement(*args: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(precision, "measure", no_second_measurement)
    assert cpu_bf16(profile, 1, tmp_path) is first
    # Another thread count is another machine setting: it would be measured.
    with pytest.raises(AssertionError, match="measured again"):
        cpu_bf16(profile, 2, tmp_path)


def test_a_profile_that_does_not_allow_bf16_trains_in_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "measure", lambda *a: pytest.fail("measured a profile that forbids bf16"))
    assert cpu_bf16(TINY.with_overrides(cpu_bf16=False), 1, tmp_path) is False
    assert not (tmp_path / CACHE_FILE).exists()


def test_a_run_reports_its_precision(byte_corpus: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    module = load_baseline("gla")
    for bf16 in (False, True):
        result = train(lambda d, h: module.Mixer(d, h), TINY.with_overrides(cpu_bf16=bf16), *byte_corpus, 256,
                       tmp_path / str(bf16), tensorboard=False)
        assert result.precision == ("bf16" if bf16 else "fp32")
        assert np.isfinite(result.final_val_loss)
