"""Shared fixtures: live torch (required in CI), float64 switch, random pytrees; the session's
compilation cache."""

import atexit
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

from helpers import early

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


# Many tests build optimizers whose programs another test compiled already (each optimizer
# instance compiles its own step): a compilation cache for this session, fresh and removed at
# its end, loads those instead of compiling them again (tests/stateful and tests/pure: 7:16 -> 6:02
# in one A/B).
_CACHE = tempfile.mkdtemp(prefix="optim_jax_tests_jax_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# A program XLA builds: compiled, or loaded from the cache above (so a step that recompiles is
# counted whether or not another test compiled the same program before).
_PROGRAM_EVENTS = ("/jax/core/compile/backend_compile_duration",
                   "/jax/compilation_cache/cache_retrieval_time_sec")
_BACKEND_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, duration, **kwargs: _BACKEND_COMPILES.append(name)
    if name in _PROGRAM_EVENTS else None
)


@pytest.fixture
def xla_compilations():
    """``count()`` of programs XLA built (compiled, or loaded from the session's compilation
    cache; any function) since the test started."""
    start = len(_BACKEND_COMPILES)
    return lambda: len(_BACKEND_COMPILES) - start


def _early_command(item):
    """The subprocess command of a test marked ``early.starts_early``, or ``None``."""
    return getattr(getattr(item, "function", None), "early_command", None)


def _module_early(item) -> dict:
    """The ``EARLY`` commands of the test's module (empty if it names none)."""
    return getattr(getattr(item, "module", None), "EARLY", {})


def pytest_collection_modifyitems(items):
    """Runs the tests that wait on an early subprocess last (in their order), so that the suite
    works beside those subprocesses instead of waiting for them."""
    items.sort(key=lambda item: _early_command(item) is not None or bool(_module_early(item)))


def pytest_collection_finish(session):
    """Queues the subprocesses of the collected tests marked ``early.starts_early``, and those
    their modules name in ``EARLY``, and starts the first."""
    by_modules = {}
    for item in session.items:
        command = _early_command(item)
        if command is not None:
            early.start(item.nodeid, command)
        by_modules.update(_module_early(item))
    for key, command in by_modules.items():
        early.start(key, command)
    early.pump()


def pytest_runtest_setup(item):
    early.pump()
