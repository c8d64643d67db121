"""The one way a mixer file is imported: by path, as a fresh module.

This executes the file's top level, so for LLM-written code it must only ever run inside the sandboxed child
process (docs/architecture.md §6), never in a service process. Our own baselines load the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

# What the trainer's model takes: ``(d_model, n_heads) -> mixer``.
MixerFactory = Callable[[int, int], nn.Module]


def load_module(source_path: str | Path, module_name: str | None = None) -> ModuleType:
    """Execute the file as a fresh module. Its name is derived from the path unless given, so reloads of different
    files never collide."""
    path = Path(source_path).resolve()
    if module_name is None:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        module_name = f"asiarch_candidate_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def mixer_class(module: ModuleType) -> type[nn.Module]:
    cls = getattr(module, "Mixer", None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError("the file must define `class Mixer(torch.nn.Module)`")
    return cls


def mixer_factory(source_path: str | Path, **kwargs: Any) -> MixerFactory:
    """A factory `(d_model, n_heads) -> Mixer` for the file at `source_path`, with fixed extra kwargs."""
    cls = mixer_class(load_module(source_path))

    def build(d_model: int, n_heads: int) -> nn.Module:
        return cls(d_model, n_heads, **kwargs)

    return build
