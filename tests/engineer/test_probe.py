"""The standalone, sandboxed probe the researcher asks before it publishes a draft: the engineer's checks, then
whether its outputs copy a known mixer."""

from __future__ import annotations

from shared.mixer.baselines import BASELINES
from shared.mixer.probe import probe_draft

GLA = BASELINES["gla"].read_text()


def test_a_renamed_baseline_is_recognised_as_that_baseline() -> None:
    assert probe_draft(GLA.replace("chunked_gla", "my_scan"), {}, "smoke").same_as == "the gla baseline"


def test_a_copy_of_a_known_mixer_is_named_by_its_label() -> None:
    assert probe_draft(GLA, {"the parent": GLA}, "smoke", baselines=False).same_as == "the parent"


def test_a_real_change_matches_nothing_and_passes_the_checks() -> None:
    changed = GLA.replace("F.silu(self.g_proj(x))", "torch.sigmoid(self.g_proj(x))")
    assert changed != GLA
    outcome = probe_draft(changed, {"the parent": GLA}, "smoke", check_profile="cpu")
    assert outcome.same_as is None and outcome.failed_check == ""


def test_a_draft_that_fails_a_check_names_it_with_its_own_failing_line_and_is_no_copy() -> None:
    broken = GLA.replace("F.silu(self.g_proj(x))", "F.silu(self.g_proj(x)) * gate_scale", 1)
    assert broken != GLA
    outcome = probe_draft(broken, {"the parent": GLA}, "smoke")
    assert outcome.same_as is None
    assert outcome.failed_check.startswith("it fails the ")
    assert "NameError" in outcome.failed_check and "gate_scale" in outcome.failed_check
    assert 'File "draft.py"' in outcome.failed_check or "draft.py" in outcome.failed_check


def test_a_file_that_raises_on_import_fails_the_import_check() -> None:
    outcome = probe_draft("raise ValueError('broken')", {"the parent": GLA}, "smoke")
    assert outcome.same_as is None and "broken" in outcome.failed_check


def test_without_checks_a_draft_is_only_compared() -> None:
    # Breaks at one token (a check fails) yet computes the parent at the probe's length: compared, it is a copy.
    one_token = "        if x.shape[1] == 1:\n            raise ValueError('one token')\n"
    fragile = GLA.replace("        q, k, v, log_alpha = self._project(x)\n",
                          one_token + "        q, k, v, log_alpha = self._project(x)\n", 1)
    assert fragile != GLA
    assert probe_draft(fragile, {"the parent": GLA}, "smoke", baselines=False).failed_check
    compared = probe_draft(fragile, {"the parent": GLA}, "smoke", checks=False, baselines=False)
    assert compared.same_as == "the parent" and compared.failed_check == ""
