"""Shared fixtures: live torch (required in CI), float64 switch, random pytrees."""

import os

import jax
import numpy as np
import pytest

# Re-exported for the modules that still import them from here; new code imports helpers.trees.
from helpers.trees import like_tree, random_tree  # noqa: E402,F401

# Temporary: tests/test_tensor_lr.py still imports these helpers from tests/test_algorithms_b.py,
# whose tests now live in tests/pure/ and whose helpers in tests/helpers/. Remove this alias when
# that import reads ``from helpers...``.
import sys  # noqa: E402
import types  # noqa: E402

from helpers import torch_reference as _torch_reference, trajectories as _trajectories  # noqa: E402
from helpers import trees as _trees  # noqa: E402

_legacy = types.ModuleType("test_algorithms_b", "Alias of tests/helpers names (see conftest.py).")
_legacy.__dict__.update(
    muon_tree=_trees.muon_tree, sparse_tree=_trees.sparse_tree, sparse_grads=_trees.sparse_grads,
    run_jax=_trajectories.jax_trajectory, run_torch=_torch_reference.run_torch,
    sparse_to_torch=_torch_reference.sparse_to_torch)
sys.modules.setdefault("test_algorithms_b", _legacy)

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
