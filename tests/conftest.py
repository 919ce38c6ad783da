"""Shared fixtures: live torch (required in CI), float64 switch, random pytrees."""

import os

import jax
import numpy as np
import pytest

try:
    import torch
except ImportError:  # pragma: no cover - exercised only on machines without torch
    torch = None
    if os.environ.get("CI"):
        raise RuntimeError(
            "torch==2.13.0 is required for the parity tests in CI: pip install -e '.[test]'"
        ) from None


@pytest.fixture
def torch_module():
    """torch, or a skip on a developer machine that has not installed the test extra."""
    if torch is None:
        pytest.skip("torch is not installed (pip install -e '.[test]')")
    torch.set_num_threads(1)
    return torch


@pytest.fixture
def x64():
    """Enables float64 for the duration of a test."""
    with jax.enable_x64(True):
        yield


_BACKEND_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, duration, **kwargs: _BACKEND_COMPILES.append(name)
    if name == "/jax/core/compile/backend_compile_duration" else None
)


@pytest.fixture
def xla_compilations():
    """``count()`` of XLA compilations (any function) since the test started."""
    start = len(_BACKEND_COMPILES)
    return lambda: len(_BACKEND_COMPILES) - start
