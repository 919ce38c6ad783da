"""Every example runs end to end as a script, prints what its docstring promises and saves its
plot. All but the README's quickstart command run in their ``--fast`` mode."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(script: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    """Runs ``examples/<script>`` with ``flags`` in ``cwd``; returns its output (the progress
    bar is on stderr)."""
    # The checkout under test comes first on the path, whatever is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *flags], cwd=cwd,
        env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    assert path.read_bytes().startswith(b"\x89PNG")


def printed_accuracy(stdout: str) -> float:
    match = re.search(r"^test accuracy: (\d+\.\d)%$", stdout, re.MULTILINE)
    assert match, stdout
    return float(match.group(1)) / 100


def test_quickstart_as_the_readme_runs_it(tmp_path):
    """``python examples/quickstart.py``: about 97%, the plot in the current directory."""
    stdout = run_example("quickstart.py", tmp_path).stdout
    assert printed_accuracy(stdout) >= 0.95
    assert_png(tmp_path / "quickstart.png")


EPOCH_METRICS = ["loss=", "test_acc="]  # what the progress bar shows after each epoch


@pytest.mark.parametrize("script, flags, min_accuracy, progress", [
    ("quickstart.py", [], 0.90, EPOCH_METRICS),
    ("train_with_scheduler.py", [], 0.92, [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    ("train_with_scheduler.py", ["--optimizer", "adamw"], 0.88,
     [*EPOCH_METRICS, "lr_hidden=", "lr_output="]),
    ("functional_loop.py", [], 0.90, EPOCH_METRICS),
], ids=["quickstart", "scheduler-SGD", "scheduler-AdamW", "functional-loop"])
def test_training_example_fast(script, flags, min_accuracy, progress, tmp_path):
    plot = tmp_path / "curves.png"
    completed = run_example(script, tmp_path, "--fast", "--plot", str(plot), *flags)
    assert printed_accuracy(completed.stdout) >= min_accuracy
    assert f"saved to {plot}" in completed.stdout
    last_update = completed.stderr.split("\r")[-1]  # the progress bar after the last epoch
    assert all(key in last_update for key in progress), last_update
    assert_png(plot)


def test_lbfgs_faces_agree_with_scipy(tmp_path):
    plot = tmp_path / "lbfgs.png"
    stdout = run_example("lbfgs_logistic.py", tmp_path, "--fast", "--plot", str(plot)).stdout
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


def test_nnx_example_trains_and_writes_dropout_keys_back(tmp_path):
    plot = tmp_path / "nnx.png"
    stdout = run_example("nnx_model.py", tmp_path, "--fast", "--plot", str(plot)).stdout
    assert printed_accuracy(stdout) >= 0.88
    drawn = re.search(r"^dropout keys drawn: (\d+) \(one per step: (\d+)\)$", stdout,
                      re.MULTILINE)
    assert drawn and drawn[1] == drawn[2] != "0", stdout
    assert_png(plot)
