"""Subprocesses that tests wait on, started as soon as collection ends.

The suite's own process keeps about 1.2 of 2 cores busy (XLA compiles on one thread), so a test
that runs a long subprocess (the README's blocks, ~30 s) lets it run beside the rest of the
suite instead of after it: ``tests/conftest.py`` starts the subprocess of every collected test
marked :func:`starts_early`, and the test collects the result with :func:`finished`. A module
whose fixture runs a subprocess for all its tests (the 8-device workers) names it in a
module-level ``EARLY = {key: command}``, started once when any of its tests is collected.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from typing import Callable

Command = Callable[[str], tuple[list[str], dict]]
_RUNNING: dict[str, subprocess.Popen] = {}
_FOLDERS: dict[str, str] = {}


def starts_early(command: Command) -> Callable:
    """Marks a test whose subprocess ``command(folder) -> (argv, env)`` (run in a fresh
    ``folder``) may start when collection ends."""
    def mark(test: Callable) -> Callable:
        test.early_command = command
        return test

    return mark


def start(key: str, command: Command) -> None:
    """Starts ``command``'s subprocess for the test ``key``."""
    folder = tempfile.mkdtemp(prefix="optim_jax_early_")
    argv, env = command(folder)
    process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(process.kill)  # an interrupted run leaves nothing behind
    _RUNNING[key], _FOLDERS[key] = process, folder


def finished(key: str, command: Command, timeout: float = 300) -> subprocess.CompletedProcess:
    """The finished subprocess of the test ``key``, started now if it was not started early."""
    if key not in _RUNNING:
        start(key, command)
    process = _RUNNING.pop(key)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def succeeded(key: str, command: Command) -> subprocess.CompletedProcess:
    """:func:`finished`, checked to have exited cleanly (its stderr shown if not)."""
    completed = finished(key, command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def folder(key: str) -> str:
    """The folder the subprocess of ``key`` ran in (what it wrote is there until the end)."""
    return _FOLDERS[key]
