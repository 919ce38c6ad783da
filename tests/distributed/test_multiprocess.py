"""Multi-process training: 2 ``jax.distributed`` processes x 4 CPU devices train a sharded MLP
with the stateful ``Adam`` and end with the params of 1 process x 8 devices.

Each run is a subprocess (the device count is fixed when JAX starts); all of them start at once
and are killed, with their process groups, if they overrun or once the test is done.

Bit-for-bit equality holds against a reference that is also a ``jax.distributed`` job (of one
process), so that both use gloo for the cross-device reductions. A plain single-process run
reduces with XLA's in-process collectives, which add the 8 devices' partial gradients in another
order: its params differ from the multi-process ones by float32 rounding only.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multiprocess_worker.py")
TIMEOUT_S = 120
ATTEMPTS = 3
TRAINED = ("param_w1", "param_b1", "param_w2", "param_b2", "exp_avg_sq_w1", "loss")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands: dict[str, list[str]], logs: Path) -> None:
    """Runs the commands concurrently, each in its own process group, until all succeed.

    Each command's output goes to a file in ``logs`` (a pipe nobody reads while waiting could
    fill up and stall it).

    Raises:
      RuntimeError: with a failed command's output, as soon as one fails; the others are killed
        then too, so that a peer waiting for it does not hold the test up.
      TimeoutError: if they are not all done within ``TIMEOUT_S``.
    """
    procs = {}
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            failed = [name for name, p in procs.items() if p.poll() not in (None, 0)]
            if failed:
                output = (logs / f"{failed[0]}.log").read_text()
                raise RuntimeError(f"{failed[0]} failed:\n{output}")
            if all(p.returncode == 0 for p in procs.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sorted(commands)} did not finish in {TIMEOUT_S} s")
            time.sleep(0.1)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("multiprocess")
    worker = [sys.executable, str(WORKER)]
    for attempt in range(ATTEMPTS):
        # Free ports can be taken by someone else before the coordinator binds them; a failed
        # start (the coordinator dies, its peer is killed) is retried on fresh ports.
        two, one = free_port(), free_port()
        commands = {
            "process 0 of 2": [*worker, str(out / "two.npz"), "4", "0", "2", str(two)],
            "process 1 of 2": [*worker, str(out / "two.npz"), "4", "1", "2", str(two)],
            "process 0 of 1": [*worker, str(out / "one.npz"), "8", "0", "1", str(one)],
            "plain": [*worker, str(out / "plain.npz"), "8"],
        }
        try:
            run_all(commands, out)
            break
        except RuntimeError:
            if attempt == ATTEMPTS - 1:
                raise
    return {name: dict(np.load(out / f"{name}.npz")) for name in ("two", "one", "plain")}


def test_runs_have_the_process_and_device_counts_asked_for(runs):
    counts = {name: (int(r["processes"]), int(r["devices"])) for name, r in runs.items()}
    assert counts == {"two": (2, 8), "one": (1, 8), "plain": (1, 8)}


def test_params_and_state_keep_their_shardings_in_every_process(runs):
    assert runs["two"]["keeps_sharding"].tolist() == [True, True]
    assert runs["plain"]["keeps_sharding"].tolist() == [True]


def test_two_processes_match_one_distributed_process_bit_for_bit(runs):
    for name in TRAINED:
        np.testing.assert_array_equal(runs["two"][name], runs["one"][name], err_msg=name)


def test_two_processes_match_a_plain_single_process_run_to_rounding(runs):
    for name in TRAINED:
        plain = runs["plain"][name]
        # A few float32 ulps at each array's own scale (exp_avg_sq is ~1e-6, the params ~1):
        # rounding differences, not a different algorithm.
        np.testing.assert_allclose(runs["two"][name], plain, rtol=1e-5,
                                   atol=1e-6 * np.abs(plain).max(), err_msg=name)
