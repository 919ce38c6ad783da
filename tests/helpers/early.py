"""Subprocesses that tests wait on, run beside the suite one at a time from when collection ends.

The suite's own process keeps about 1.2 of 2 cores busy (XLA compiles on one thread), so a test
whose work is a subprocess (the README's blocks, the examples, the benchmarks, the 8-device
workers) has it run on the spare core instead of holding the suite up: ``tests/conftest.py``
queues the subprocess of every collected test marked :func:`starts_early`, and those a module
names in a module-level ``EARLY = {key: command}``, and runs the tests that wait on them last.
Between tests, :func:`pump` starts the next queued one once the one running has ended (running
them all at once would only make them take turns on the cores); a test that wants one not yet
started starts it at once. The test collects the result with :func:`finished`.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from typing import Callable

Command = Callable[[str], tuple[list[str], dict]]
AT_ONCE = 1  # queued subprocesses running at a time


_QUEUED: dict[str, tuple[list[str], dict]] = {}  # argv and env, in the order queued
_RUNNING: dict[str, tuple[subprocess.Popen, object, object]] = {}  # process, stdout, stderr
_FOLDERS: dict[str, str] = {}


def starts_early(command: Command) -> Callable:
    """Marks a test whose subprocess ``command(folder) -> (argv, env)`` (run in a fresh
    ``folder``) may start when collection ends."""
    def mark(test: Callable) -> Callable:
        test.early_command = command
        return test

    return mark


def start(key: str, command: Command) -> None:
    """Queues ``command``'s subprocess for the test ``key`` (see :func:`pump`)."""
    folder = tempfile.mkdtemp(prefix="optim_jax_early_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    argv, env = command(folder)
    _QUEUED[key], _FOLDERS[key] = (argv, env), folder


def pump() -> None:
    """Starts queued subprocesses while fewer than ``AT_ONCE`` are running."""
    while _QUEUED and sum(p.poll() is None for p, _, _ in _RUNNING.values()) < AT_ONCE:
        _launch(next(iter(_QUEUED)))


def _launch(key: str) -> None:
    argv, env = _QUEUED.pop(key)
    # Files, not pipes: nobody reads a pipe until the test comes, and a full one would stall
    # the subprocess.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    process = subprocess.Popen(argv, cwd=_FOLDERS[key], env=env, stdout=out, stderr=err)
    atexit.register(process.kill)  # an interrupted run leaves nothing behind
    _RUNNING[key] = process, out, err


def finished(key: str, command: Command, timeout: float = 300) -> subprocess.CompletedProcess:
    """The finished subprocess of the test ``key``, started now if it was not started yet."""
    if key not in _RUNNING and key not in _QUEUED:
        start(key, command)
    if key in _QUEUED:
        _launch(key)
    process, out, err = _RUNNING.pop(key)
    process.wait(timeout=timeout)
    out.seek(0)
    err.seek(0)
    return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())


def succeeded(key: str, command: Command) -> subprocess.CompletedProcess:
    """:func:`finished`, checked to have exited cleanly (its stderr shown if not)."""
    completed = finished(key, command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def folder(key: str) -> str:
    """The folder the subprocess of ``key`` ran in (what it wrote is there until the end)."""
    return _FOLDERS[key]
