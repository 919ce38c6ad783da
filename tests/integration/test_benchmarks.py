"""The benchmarks run (``--tiny``: every row once on tiny sizes, the timings meaningless) and
report every implementation they promise. They run in this process (``main(argv)``); bench_lbfgs
switches float64 on at import, and the setting is restored after it."""

import importlib
from pathlib import Path

import pytest

from helpers.examples import global_x64_restored

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
    for impl in ("optim_jax class: opt.grad = g; step()", "optim_jax class: step(closure)",
                 "optax: value_and_grad of the closure's loss + update"):
        assert f"| {impl} |" in report
    assert "class step() / best torch" in report


def test_bench_step_times_the_first_step_in_fresh_processes(run_main):
    report = run_main("bench_step.py", "--first-step")
    for row in ("jax.grad of the loss alone", "optax, hand-jitted grad + update",
                "contiguous buffers", "group kept as a tree", "over the persistent cache"):
        assert row in report


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


def test_bench_lbfgs_reports_every_solver(run_main):
    with global_x64_restored():
        report = run_main("bench_lbfgs.py")
    for solver in ("optim_jax", "torch", "scipy", "optax"):
        assert f"| Rosenbrock 2-d | {solver} |" in report
