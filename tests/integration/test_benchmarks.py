"""The benchmarks run (``--tiny``: every row once on tiny sizes, the timings meaningless) and
report every implementation they promise. Each runs as a script (``python benchmarks/<script>``,
the checkout under test first on the path) beside the rest of the suite (``helpers.early``)."""

from helpers import early
from helpers.examples import ROOT, python_command


def benchmark(script: str, *flags: str) -> early.Command:
    """The command of ``python benchmarks/<script> --tiny flags``."""
    return lambda folder: python_command(ROOT / "benchmarks" / script, "--tiny", *flags)


EARLY = {  # keyed by the command line
    "bench_step.py": benchmark("bench_step.py"),
    "bench_step.py --first-step": benchmark("bench_step.py", "--first-step"),
    "bench_step.py --algorithms": benchmark("bench_step.py", "--algorithms"),
    "bench_wrapper.py": benchmark("bench_wrapper.py"),
    "bench_lbfgs.py": benchmark("bench_lbfgs.py"),
}


def report(run: str) -> str:
    """What the run ``run`` of :data:`EARLY` printed."""
    return early.succeeded(run, EARLY[run]).stdout


def test_bench_step_reports_every_implementation():
    text = report("bench_step.py")
    for algo in ("adam", "sgd"):
        for impl in ("optim_jax", "optax", "torch foreach=False", "torch foreach=True",
                     "torch fused=True"):
            assert f"| {algo} | {impl} |" in text
    assert "roof (1 flat array)" in text
    for impl in ("optim_jax class: opt.grad = g; step()", "optim_jax class: step(closure)",
                 "optax: value_and_grad of the closure's loss + update"):
        assert f"| {impl} |" in text
    assert "class step() / best torch" in text


def test_bench_step_times_the_first_step_in_fresh_processes():
    text = report("bench_step.py --first-step")
    for row in ("jax.grad of the loss alone", "optax, hand-jitted grad + update",
                "contiguous buffers", "group kept as a tree", "over the persistent cache"):
        assert row in text


def test_bench_wrapper_reports_every_implementation():
    text = report("bench_wrapper.py")
    for impl in ("(a) jax.jit + optax.adam", "(b) optim_jax.Adam", "(c) flax nnx.Optimizer",
                 "(d) optim_jax.Adam(nnx model)", "(e) torch eager"):
        assert impl in text


def test_bench_step_covers_every_algorithm():
    text = report("bench_step.py --algorithms")
    for name in ("sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam",
                 "radam", "rmsprop", "rprop", "adafactor", "muon"):
        assert f"| {name} |" in text


def test_bench_lbfgs_reports_every_solver():
    text = report("bench_lbfgs.py")
    for solver in ("optim_jax", "torch", "scipy", "optax"):
        assert f"| Rosenbrock 2-d | {solver} |" in text
