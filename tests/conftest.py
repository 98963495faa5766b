from __future__ import annotations

import numpy as np
import pytest

import framework


@pytest.fixture
def float64():
    """Build layers in float64 for finite-difference checks; restore float32 after."""
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    yield
    framework.set_default_dtype(old)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seeded_framework():
    """Every test starts from the same global generator state, whatever ran before it."""
    framework.set_seed(20261126)
    yield
