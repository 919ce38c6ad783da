"""The benchmarks run (quick mode) and report every implementation they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, out: Path, *flags: str) -> str:
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *flags, "--markdown", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return out.read_text()


@pytest.fixture(scope="module")
def step_report(tmp_path_factory) -> str:
    return run("bench_step.py", tmp_path_factory.mktemp("bench") / "step.md")


@pytest.mark.parametrize("algo", ["adam", "sgd"])
def test_bench_step_reports_every_implementation(step_report, algo):
    for impl in ("optim_jax", "optax", "torch foreach=False", "torch foreach=True", "torch fused=True"):
        assert f"| {algo} | {impl} |" in step_report
    assert "roof (1 flat array)" in step_report


def test_bench_wrapper_reports_every_implementation(tmp_path):
    report = run("bench_wrapper.py", tmp_path / "wrapper.md")
    for impl in ("(a) jax.jit + optax.adam", "(b) optim_jax.Adam", "(c) flax nnx.Optimizer",
                 "(d) optim_jax.Adam(nnx model)", "(e) torch eager"):
        assert impl in report


def test_bench_step_covers_every_algorithm(tmp_path):
    report = run("bench_step.py", tmp_path / "algorithms.md", "--algorithms")
    for name in ("sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam",
                 "radam", "rmsprop", "rprop", "adafactor", "muon"):
        assert f"| {name} |" in report


def test_bench_lbfgs_reports_every_solver(tmp_path):
    report = run("bench_lbfgs.py", tmp_path / "lbfgs.md")
    for solver in ("optim_jax", "torch", "scipy", "optax"):
        assert f"| Rosenbrock 2-d | {solver} |" in report
