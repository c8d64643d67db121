"""`asiarch submit`'s input checks: what cannot be a mixer is refused with its reason; a bug is let through."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.cli.submit import SubmitError, motivation_of, read_mixer
from shared.mixer.baselines import BASELINES


def test_a_baseline_file_is_a_mixer(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(BASELINES["deltanet"].read_text())
    assert read_mixer(path) == path.read_text()


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "is empty"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"import torch\n\nclass Other(torch.nn.Module):\n    pass\n", "defines no top-level `class Mixer"),
    ("# A README \u2014 not code\n\nSome prose.\n".encode(), "is not Python"),
])
def test_what_cannot_be_a_mixer_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "mine.py"
    path.write_bytes(content)
    with pytest.raises(SubmitError, match=reason):
        read_mixer(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="is not a file"):
        read_mixer(tmp_path / "nowhere.py")


def test_a_syntax_error_goes_to_the_debugger(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("class Mixer(torch.nn.Module:\n    pass\n")
    assert read_mixer(path).startswith("class Mixer")


def test_the_motivation_is_the_module_docstring(tmp_path: Path) -> None:
    assert motivation_of('"""Gate the state."""\nclass Mixer: pass\n', tmp_path / "m.py") == "Gate the state."
    assert motivation_of("class Mixer: pass\n", tmp_path / "m.py") == "Submitted by hand from m.py."
