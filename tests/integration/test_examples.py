"""Every example runs end to end, prints what its docstring promises and saves its plot.

The README's quickstart command runs as written (no arguments, full length, the plot in the
current folder); the others run in their ``--fast`` mode. They run in this process through
``main(argv)``, except ``data_parallel.py``, which sets the device count before JAX starts: a
script of its own, as a user runs it. ``lbfgs_logistic.py`` switches float64 on at import; the
setting is restored after it."""

import os
import re
from pathlib import Path

import pytest

from helpers import early
from helpers.examples import (assert_png, global_x64_restored, printed_accuracy, run_main,
                              script_command)

EPOCH_METRICS = ["loss=", "test_acc="]  # what the progress bar shows after each epoch


def last_progress_update(stderr: str) -> str:
    return stderr.split("\r")[-1]  # the progress bar after the last epoch


def test_quickstart_as_the_readme_runs_it(tmp_path, monkeypatch, capsys):
    """``python examples/quickstart.py`` (its ``main`` without arguments, in a fresh current
    directory): about 97%, the plot in the current directory."""
    monkeypatch.chdir(tmp_path)
    _, stdout, stderr = run_main("quickstart.py", [], monkeypatch, capsys)
    assert printed_accuracy(stdout) >= 0.95
    last_update = last_progress_update(stderr)
    assert all(key in last_update for key in EPOCH_METRICS), last_update
    assert_png(tmp_path / "quickstart.png")


@pytest.mark.parametrize("script, flags, min_accuracy, progress", [
    ("train_with_scheduler.py", [], 0.92, [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    ("train_with_scheduler.py", ["--optimizer", "adamw"], 0.88,
     [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    ("functional_loop.py", [], 0.90, EPOCH_METRICS),
], ids=["scheduler-SGD", "scheduler-AdamW", "functional-loop"])
def test_training_example_fast(script, flags, min_accuracy, progress, tmp_path, monkeypatch,
                               capsys):
    plot = tmp_path / "curves.png"
    _, stdout, stderr = run_main(script, ["--fast", "--plot", str(plot), *flags], monkeypatch,
                                 capsys)
    assert printed_accuracy(stdout) >= min_accuracy
    assert f"saved to {plot}" in stdout
    last_update = last_progress_update(stderr)
    assert all(key in last_update for key in progress), last_update
    assert_png(plot)


def test_lbfgs_faces_agree_with_scipy(tmp_path, monkeypatch, capsys):
    plot = tmp_path / "lbfgs.png"
    with global_x64_restored():
        _, stdout, _ = run_main("lbfgs_logistic.py", ["--fast", "--plot", str(plot)], monkeypatch,
                                capsys)
    rows = {
        match["solver"]: match
        for match in re.finditer(
            r"^(?P<solver>\S.*?)\s+(?P<loss>\d\.\d+e[-+]\d+)\s+(?P<iters>\d+)\s+(?P<evals>\d+)"
            r"\s+\S+\s+\S+\s+(?P<acc>\d+\.\d)%$", stdout, re.MULTILINE)
    }
    torch_style = rows["optim_jax.LBFGS (torch-style loop)"]
    pure = rows["optim_jax.lbfgs (pure, one jit call)"]
    scipy = rows["scipy L-BFGS-B (jitted value+grad)"]
    reference = float(scipy["loss"])
    for row in (torch_style, pure):
        assert abs(float(row["loss"]) - reference) <= 1e-6 * reference
    for row in (torch_style, pure, scipy):
        assert float(row["acc"]) >= 95.0
        assert int(row["iters"]) < 1000  # converged, not stopped by the iteration limit
    assert_png(plot)


def test_nnx_example_trains_and_writes_dropout_keys_back(tmp_path, monkeypatch, capsys):
    plot = tmp_path / "nnx.png"
    _, stdout, _ = run_main("nnx_model.py", ["--fast", "--plot", str(plot)], monkeypatch, capsys)
    assert printed_accuracy(stdout) >= 0.88
    drawn = re.search(r"^dropout keys drawn: (\d+) \(one per step: (\d+)\)$", stdout,
                      re.MULTILINE)
    assert drawn and drawn[1] == drawn[2] != "0", stdout
    assert_png(plot)


def test_swa_ema_example_fast(tmp_path, monkeypatch, capsys):
    """The last, SWA and EMA weights all score; the three accuracies are printed."""
    plot = tmp_path / "swa_ema.png"
    returned, stdout, _ = run_main("swa_ema.py", ["--fast", "--plot", str(plot)], monkeypatch,
                                   capsys)
    printed = dict(re.findall(r"^test accuracy, (\S+) weights: (\d+\.\d)%$", stdout, re.MULTILINE))
    assert printed == {name: f"{100 * value:.1f}" for name, value in returned.items()}, stdout
    assert set(returned) == {"last", "SWA", "EMA"}
    assert all(value >= 0.9 for value in returned.values()), returned
    assert f"saved to {plot}" in stdout
    assert_png(plot)


# -- data_parallel.py: 8 fake CPU devices, so a script of its own ------------------------------


def data_parallel_run(folder: str) -> tuple[list[str], dict]:
    # Without a device count of the caller's, the script makes its own 8 devices.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return script_command("data_parallel.py", "--fast", env=env)


EARLY = {"data_parallel_example": data_parallel_run}  # ~9 s: it runs beside the suite


@pytest.fixture(scope="module")
def data_parallel() -> tuple[str, object]:
    """The script's output, and the PNG it saved where it saves one by default."""
    completed = early.succeeded("data_parallel_example", data_parallel_run)
    return completed.stdout, Path(early.folder("data_parallel_example")) / "data_parallel.png"


def held_bytes(stdout: str) -> dict[int, tuple[int, int]]:
    """``{device: (param bytes, optimizer state bytes)}`` as the script prints them."""
    lines = re.findall(r"device (\d+): params (\d+) bytes, optimizer state (\d+) bytes", stdout)
    return {int(d): (int(p), int(s)) for d, p, s in lines}


def test_data_parallel_fast_run_reaches_90_percent(data_parallel):
    accuracy = re.search(r"test accuracy: ([\d.]+)%", data_parallel[0])
    assert float(accuracy.group(1)) >= 90


def test_data_parallel_each_of_8_devices_holds_about_an_eighth_of_the_params(data_parallel):
    stdout = data_parallel[0]
    total = int(re.search(r"8 devices, params (\d+) bytes in all", stdout).group(1))
    held = held_bytes(stdout)
    assert sorted(held) == list(range(8))
    # The output layer's 10 biases do not split 8 ways: every device keeps all 40 bytes.
    assert all(params == (total - 40) // 8 + 40 for params, _ in held.values())


def test_data_parallel_adamw_state_is_two_moments_per_param_slice_and_a_step(data_parallel):
    for params, state in held_bytes(data_parallel[0]).values():
        assert state == 2 * params + 4


def test_data_parallel_loss_plot_is_saved_by_default_as_a_png(data_parallel):
    assert_png(data_parallel[1])
