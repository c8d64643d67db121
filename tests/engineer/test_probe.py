"""The standalone, sandboxed behaviour probe the researcher asks before it publishes a draft."""

from __future__ import annotations

from shared.mixer.baselines import BASELINES
from shared.mixer.probe import same_computation

GLA = BASELINES["gla"].read_text()


def test_a_renamed_baseline_is_recognised_as_that_baseline() -> None:
    assert same_computation(GLA.replace("chunked_gla", "my_scan"), {}, "smoke") == "the gla baseline"


def test_a_copy_of_a_known_mixer_is_named_by_its_label() -> None:
    assert same_computation(GLA, {"the parent": GLA}, "smoke", baselines=False) == "the parent"


def test_a_real_change_matches_nothing() -> None:
    changed = GLA.replace("F.silu(self.g_proj(x))", "torch.sigmoid(self.g_proj(x))")
    assert changed != GLA
    assert same_computation(changed, {"the parent": GLA}, "smoke") is None


def test_a_draft_that_raises_is_no_copy() -> None:
    assert same_computation("raise ValueError('broken')", {"the parent": GLA}, "smoke") is None
