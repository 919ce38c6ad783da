"""Every example runs end to end, prints what its docstring promises and saves its plot.

Each runs as a script, as a user runs it (a fresh interpreter, the checkout under test first on
the path), beside the rest of the suite (``helpers.early``). The README's quickstart command runs
as written (no arguments, full length, the plot in the current folder); the others run in their
``--fast`` mode. ``data_parallel.py`` makes its own 8 CPU devices."""

import os
import re
from pathlib import Path

import pytest

from helpers import early
from helpers.examples import assert_png, printed_accuracy, script_command

EPOCH_METRICS = ["loss=", "test_acc="]  # what the progress bar shows after each epoch
TRAINING = {  # the training examples' runs: flags, least accuracy, progress bar keys
    "scheduler-SGD": ("train_with_scheduler.py", [], 0.92,
                      [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    "scheduler-AdamW": ("train_with_scheduler.py", ["--optimizer", "adamw"], 0.88,
                        [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    "functional-loop": ("functional_loop.py", [], 0.90, EPOCH_METRICS),
}


def fast_run(script: str, *flags: str) -> early.Command:
    """The command of ``script --fast --plot plot.png flags`` (the plot in its folder)."""
    return lambda folder: script_command(script, "--fast", "--plot",
                                         str(Path(folder) / "plot.png"), *flags)


def data_parallel_run(folder: str) -> tuple[list[str], dict]:
    # Without a device count of the caller's, the script makes its own 8 devices.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return script_command("data_parallel.py", "--fast", env=env)


RUNS = {
    "quickstart": lambda folder: script_command("quickstart.py"),
    **{name: fast_run(script, *flags) for name, (script, flags, _, _) in TRAINING.items()},
    "lbfgs": fast_run("lbfgs_logistic.py"),
    "nnx": fast_run("nnx_model.py"),
    "swa_ema": fast_run("swa_ema.py"),
    "data_parallel": data_parallel_run,
}
EARLY = {f"examples: {name}": command for name, command in RUNS.items()}


def example(name: str) -> tuple[str, str, Path]:
    """The finished run ``name`` of :data:`RUNS`: (stdout, stderr, the folder it ran in)."""
    key = f"examples: {name}"
    completed = early.succeeded(key, EARLY[key])
    return completed.stdout, completed.stderr, Path(early.folder(key))


def last_progress_update(stderr: str) -> str:
    return stderr.split("\r")[-1]  # the progress bar after the last epoch


def test_quickstart_as_the_readme_runs_it():
    """``python examples/quickstart.py`` (no arguments, in a fresh current directory): about
    97%, the plot in the current directory."""
    stdout, stderr, folder = example("quickstart")
    assert printed_accuracy(stdout) >= 0.95
    last_update = last_progress_update(stderr)
    assert all(key in last_update for key in EPOCH_METRICS), last_update
    assert_png(folder / "quickstart.png")


@pytest.mark.parametrize("name", TRAINING)
def test_training_example_fast(name):
    _, _, min_accuracy, progress = TRAINING[name]
    stdout, stderr, folder = example(name)
    assert printed_accuracy(stdout) >= min_accuracy
    assert f"saved to {folder / 'plot.png'}" in stdout
    last_update = last_progress_update(stderr)
    assert all(key in last_update for key in progress), last_update
    assert_png(folder / "plot.png")


def test_lbfgs_faces_agree_with_scipy():
    stdout, _, folder = example("lbfgs")
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
    assert_png(folder / "plot.png")


def test_nnx_example_trains_and_writes_dropout_keys_back():
    stdout, _, folder = example("nnx")
    assert printed_accuracy(stdout) >= 0.88
    drawn = re.search(r"^dropout keys drawn: (\d+) \(one per step: (\d+)\)$", stdout,
                      re.MULTILINE)
    assert drawn and drawn[1] == drawn[2] != "0", stdout
    assert_png(folder / "plot.png")


def test_swa_ema_example_fast():
    """The last, SWA and EMA weights all score; the three accuracies are printed."""
    stdout, _, folder = example("swa_ema")
    printed = dict(re.findall(r"^test accuracy, (\S+) weights: (\d+\.\d)%$", stdout,
                              re.MULTILINE))
    assert set(printed) == {"last", "SWA", "EMA"}, stdout
    assert all(float(value) >= 90 for value in printed.values()), printed
    assert f"saved to {folder / 'plot.png'}" in stdout
    assert_png(folder / "plot.png")


# -- data_parallel.py: 8 fake CPU devices ---------------------------------------------------


@pytest.fixture(scope="module")
def data_parallel() -> tuple[str, Path]:
    """The script's output, and the PNG it saved where it saves one by default."""
    stdout, _, folder = example("data_parallel")
    return stdout, folder / "data_parallel.png"


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
