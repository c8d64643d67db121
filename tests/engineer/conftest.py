"""Engineer test fixtures: one torch thread (the box is shared), a small structured byte corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.engineer.trainer import synthetic_tokens

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def byte_corpus() -> tuple[np.ndarray, np.ndarray]:
    """(train, val) byte tokens from disjoint parts of a deterministic synthetic text."""
    data = synthetic_tokens(220_000, seed=0)
    return data[:200_000], data[200_000:]
