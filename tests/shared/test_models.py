"""Model registry: local GGUF files, known packaged models, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.models import KNOWN_MODELS, ModelError, pull, read_registry, register_file, resolve


def test_register_and_resolve_a_local_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    entry = register_file(tmp_path / "models", gguf, name="tiny")
    assert read_registry(tmp_path / "models")["tiny"] == entry
    assert resolve(tmp_path / "models", "tiny") == gguf.resolve()
    assert resolve(tmp_path / "models", str(gguf)) == gguf


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelError, match="not a GGUF"):
        register_file(tmp_path / "models", bogus)


def test_unknown_names_get_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=re.escape("asiarch models pull qwen2.5-coder-0.5b")):
        resolve(tmp_path, "qwen2.5-coder-0.5b")
    with pytest.raises(ModelError, match="unknown model"):
        pull(tmp_path, "gpt-9")


def test_known_models_are_complete() -> None:
    for model in KNOWN_MODELS.values():
        assert len(model.packages()) == model.parts and len(model.sha256) == 64 and model.size > 0
