"""The benchmarks run (``--tiny``: every row once on tiny sizes, the timings meaningless) and
report every implementation they promise. bench_step and bench_wrapper run in this process
(``main(argv)``); bench_lbfgs as a script, since it switches float64 on at import."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_main(monkeypatch, capsys):
    """``benchmarks/<script>``'s ``main(argv)`` here; returns its report. torch's thread count,
    which the benchmarks set to the machine's cores, is restored afterwards."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()

    def run(script: str, *flags: str) -> str:
        try:
            return importlib.import_module(Path(script).stem).main(["--tiny", *flags])
        finally:
            torch.set_num_threads(threads)
            capsys.readouterr()

    return run


def test_bench_step_reports_every_implementation(run_main):
    report = run_main("bench_step.py")
    for algo in ("adam", "sgd"):
        for impl in ("optim_jax", "optax", "torch foreach=False", "torch foreach=True",
                     "torch fused=True"):
            assert f"| {algo} | {impl} |" in report
    assert "roof (1 flat array)" in report


def test_bench_wrapper_reports_every_implementation(run_main):
    report = run_main("bench_wrapper.py")
    for impl in ("(a) jax.jit + optax.adam", "(b) optim_jax.Adam", "(c) flax nnx.Optimizer",
                 "(d) optim_jax.Adam(nnx model)", "(e) torch eager"):
        assert impl in report


def test_bench_step_covers_every_algorithm(run_main):
    report = run_main("bench_step.py", "--algorithms")
    for name in ("sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam",
                 "radam", "rmsprop", "rprop", "adafactor", "muon"):
        assert f"| {name} |" in report


def test_bench_lbfgs_reports_every_solver(tmp_path):
    out = tmp_path / "lbfgs.md"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_lbfgs.py"), "--tiny", "--markdown", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    report = out.read_text()
    for solver in ("optim_jax", "torch", "scipy", "optax"):
        assert f"| Rosenbrock 2-d | {solver} |" in report
