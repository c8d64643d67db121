"""The trainer: smoke runs learn, bad runs stop with the right kind, artefacts are written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from services.engineer.trainer import (
    TrainingStopped,
    compare_step_times,
    load_checkpoint,
    lr_at,
    train,
    unigram_entropy,
)
from shared.mixer.baselines import load_baseline
from shared.mixer.loader import mixer_factory
from shared.mixer.model import LanguageModel, ModelConfig, count_parameters
from shared.mixer.profiles import PROFILES, Profile

BAD_MIXERS = Path(__file__).parent / "fixtures" / "bad_mixers"

# The smoke profile shrunk to a few seconds per baseline on one thread (the full one takes ~30 s).
FAST = PROFILES["smoke"].with_overrides(
    d_model=64, n_layers=2, n_heads=2, seq_len=64, batch_size=16, micro_batch_size=16, tokens=128_000,
    lr=3e-3, warmup_steps=5, val_batches=2,
)
TINY = FAST.with_overrides(tokens=16 * 64 * 6, warmup_steps=2, val_batches=1, batch_size=8, micro_batch_size=4)


def _run(name: str, profile: Profile, corpus: tuple[np.ndarray, np.ndarray], run_dir: Path, **kwargs: object):
    module = load_baseline(name)
    return train(lambda d, h: module.Mixer(d, h), profile, *corpus, 256, run_dir, tensorboard=False, **kwargs)


@pytest.mark.parametrize(
    "name",
    [
        "linear_attention",
        "gla",
        pytest.param("retnet", marks=pytest.mark.slow),
        pytest.param("deltanet", marks=pytest.mark.slow),
        pytest.param("gated_deltanet", marks=pytest.mark.slow),
        pytest.param("mamba2", marks=pytest.mark.slow),
        pytest.param("softmax_attention", marks=pytest.mark.slow),
    ],
)
def test_smoke_training_beats_unigram_entropy(name: str, byte_corpus, tmp_path: Path) -> None:
    entropy = unigram_entropy(byte_corpus[0], 256)
    result = _run(name, FAST, byte_corpus, tmp_path)
    assert result.final_val_loss < entropy - 0.4, (result.final_val_loss, entropy)
    assert result.curve[0].loss > result.curve[-1].loss
    assert result.tokens == FAST.total_steps * FAST.tokens_per_step and result.tok_per_s > 0


def test_artefacts_progress_and_eval_callback(byte_corpus, tmp_path: Path) -> None:
    module = load_baseline("gla")
    seen: list[int] = []
    result = train(
        lambda d, h: module.Mixer(d, h), TINY, *byte_corpus, 256, tmp_path, flags={"source": "gla.py"},
        progress=lambda p: seen.append(p.step), evaluate=lambda model: {"dummy": 1.0},
    )
    assert seen == list(range(1, TINY.total_steps + 1))
    assert result.eval_scores["dummy"] == 1.0 and math.isfinite(result.eval_scores["val_loss"])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert result.cpu_core_seconds > 0 and result.gpu_seconds == 0 and result.device == "cpu"
    model, payload = load_checkpoint(result.checkpoint_path, lambda d, h: module.Mixer(d, h))
    assert payload["flags"] == {"source": "gla.py"} and payload["profile"]["name"] == "smoke"
    assert count_parameters(model) == result.params


def test_same_seed_same_losses(byte_corpus, tmp_path: Path) -> None:
    first = _run("retnet", TINY, byte_corpus, tmp_path / "a")
    second = _run("retnet", TINY, byte_corpus, tmp_path / "b")
    assert [p.loss for p in first.curve] == [p.loss for p in second.curve]


def test_nan_stops_run_and_keeps_curve(byte_corpus, tmp_path: Path) -> None:
    factory = mixer_factory(BAD_MIXERS / "makes_nan.py")
    with pytest.raises(TrainingStopped) as info:
        train(factory, TINY, *byte_corpus, 256, tmp_path, tensorboard=False)
    assert info.value.kind == "nan"
    assert info.value.result.curve and not math.isfinite(info.value.result.curve[-1].loss)


def test_step_times_are_taken_side_by_side() -> None:
    """A mixer against itself, interleaved: the ratio is about one, whatever else the machine does meanwhile."""
    module = load_baseline("linear_attention")
    times = compare_step_times(lambda d, h: module.Mixer(d, h), lambda d, h: module.Mixer(d, h), TINY, 256, pairs=2)
    assert times.clock == "CPU time" and times.pairs == 2
    assert times.candidate_s > 0 and times.reference_s > 0 and 0.4 < times.ratio < 2.5


def test_wsd_schedule_shape() -> None:
    p = PROFILES["smoke"]
    lrs = [lr_at(s, p) for s in range(p.total_steps)]
    assert lrs[0] < lrs[p.warmup_steps] == p.lr
    assert lrs[-1] == pytest.approx(p.lr * p.min_lr_ratio, rel=0.05)
    assert max(lrs) == p.lr


def test_model_ties_head_and_counts_params() -> None:
    module = load_baseline("linear_attention")
    config = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, seq_len=16)
    model = LanguageModel(config, lambda d, h: module.Mixer(d, h))
    logits = model(torch.randint(0, 256, (2, 16)))
    assert logits.shape == (2, 16, 256)
    assert all("head" not in name for name, _ in model.named_parameters())  # the head reuses embed.weight
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_sizes_fit_their_param_range(name: str) -> None:
    from shared.mixer.checks import check_params

    profile = PROFILES[name]
    for baseline in ("linear_attention", "gated_deltanet", "mamba2"):
        module = load_baseline(baseline)
        measured = check_params(lambda d, h, m=module: m.Mixer(d, h), profile)
        low, high = profile.param_range
        assert low <= measured["params"] <= high
