"""examples/data_parallel.py trains across 8 fake CPU devices with sharded params and state.

Runs the script as a user does, in a subprocess: it sets its own device count before JAX
starts, which this test process (JAX already started, one device) cannot.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "data_parallel.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[str, Path]:
    """The script's output, and the PNG it saved where it saves one by default."""
    cwd = tmp_path_factory.mktemp("data_parallel")
    # Without a device count of the caller's, the script makes its own 8 devices.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--fast"], cwd=cwd, env=env,
                         check=True, capture_output=True, text=True, timeout=300)
    return out.stdout, cwd / "data_parallel.png"


def held_bytes(stdout: str) -> dict[int, tuple[int, int]]:
    """``{device: (param bytes, optimizer state bytes)}`` as the script prints them."""
    lines = re.findall(r"device (\d+): params (\d+) bytes, optimizer state (\d+) bytes", stdout)
    return {int(d): (int(p), int(s)) for d, p, s in lines}


def test_fast_run_reaches_90_percent(run):
    accuracy = re.search(r"test accuracy: ([\d.]+)%", run[0])
    assert float(accuracy.group(1)) >= 90


def test_each_of_8_devices_holds_about_an_eighth_of_the_params(run):
    total = int(re.search(r"8 devices, params (\d+) bytes in all", run[0]).group(1))
    held = held_bytes(run[0])
    assert sorted(held) == list(range(8))
    # The output layer's 10 biases do not split 8 ways: every device keeps all 40 bytes.
    assert all(params == (total - 40) // 8 + 40 for params, _ in held.values())


def test_adamw_state_is_two_moments_per_param_slice_and_one_step_counter(run):
    for params, state in held_bytes(run[0]).values():
        assert state == 2 * params + 4


def test_loss_plot_is_saved_by_default_as_a_png(run):
    assert run[1].read_bytes().startswith(b"\x89PNG")
