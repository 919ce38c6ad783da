"""Full-solve L-BFGS benchmark: optim_jax.LBFGS against torch.optim.LBFGS, scipy and optax.

Problems (float64): the chained Rosenbrock function in 2, 100 and 1000 dimensions from
x0 = (-1.2, 1, -1.2, 1, ...), and multinomial logistic regression on scikit-learn's bundled
digits (1797 x 64 inputs scaled by 1/16, 10 classes; mean softmax cross-entropy plus
``lambda/2 * ||W||^2`` with lambda = 1e-3; params ``W`` (64 x 10) and ``b`` (10,), from zero).

Solvers, each run from x0 until max|g| <= 1e-5 or 1000 iterations, history 10 everywhere:

* optim_jax: ``optim_jax.LBFGS(line_search_fn='strong_wolfe', max_iter=1000, max_eval=2500,
  tolerance_grad=1e-5, tolerance_change=0)``, one ``opt.step(closure)`` (one compiled
  ``lax.while_loop``). Repeats reuse the optimiser, reset with ``load_state_dict`` and fresh
  params, so they reuse its compiled step; the hyperparameter vector that ``load_state_dict``
  discards is rebuilt before the timer (a one-off after a load, not part of a solve).
* torch: ``torch.optim.LBFGS`` with the same settings, float64 tensors, a closure with
  ``zero_grad``/``backward``; a fresh optimiser per run.
* scipy: ``scipy.optimize.minimize(method='L-BFGS-B', jac=True)`` over a flat float64 vector,
  the objective a ``jax.jit``-compiled ``value_and_grad`` (maxiter=1000, gtol=1e-5, maxcor=10,
  maxfun=2500, ftol=0 so that the gradient test decides, as tolerance_change=0 does above).
* optax: ``optax.lbfgs(memory_size=10)`` (zoom line search) in a jitted ``lax.while_loop`` using
  ``optax.value_and_grad_from_state``, stopping on max|g| <= 1e-5 or 1000 iterations.
  Evaluations = 1 (the first ``value_and_grad``) + the line searches' ``num_linesearch_steps``
  (each step evaluates once, and later iterations reuse the line search's value and gradient).

Reported per problem and solver: final loss and max|g| (recomputed with JAX at the returned
params), iterations, evaluations of loss and gradient, wall time (median and fastest of the
timed runs, after a first call) and, for the solvers that compile, the first call's extra time
(compile time, roughly: first call minus the median). Then per problem: optim_jax's wall time over
torch's and optax's, its evaluations over torch's, and whether the targets hold (evaluations
<= torch's; wall time <= 0.2x torch's and <= optax's); and the time of one evaluation of loss and
gradient at x0 (a jitted JAX ``value_and_grad`` call, torch's forward and backward), with the
floor it sets: optim_jax's evaluations times one JAX evaluation, over torch's wall time, which no
solver making those evaluations can beat. Solvers take turns run by run, so a slow
spell of the machine lands on all of them alike; the report says how much CPU other processes
used, overall and per problem (near 0: uncontended timings).

Run::

    python benchmarks/bench_lbfgs.py                     # all problems, 3 timed runs each
    python benchmarks/bench_lbfgs.py --quick             # 2-d and 100-d Rosenbrock, 1 run
    python benchmarks/bench_lbfgs.py --tiny              # 2-d Rosenbrock, 1 run (the tests)
    python benchmarks/bench_lbfgs.py --markdown out.md   # also write the report to out.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable, NamedTuple

import jax

jax.config.update("jax_enable_x64", True)  # before any array is created

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import optim_jax  # noqa: E402
from bench_step import busy_cpu_seconds, cpu_count, own_cpu_seconds, publish  # noqa: E402

TOLERANCE_GRAD = 1e-5
MAX_ITER = 1000
MAX_EVAL = 2500
HISTORY = 10
L2 = 1e-3
REPEATS = 3
SOLVERS = ("optim_jax", "torch", "scipy", "optax")
COMPILED = ("optim_jax", "scipy", "optax")
LBFGS_OPTIONS = {
    "line_search_fn": "strong_wolfe", "max_iter": MAX_ITER, "max_eval": MAX_EVAL,
    "tolerance_grad": TOLERANCE_GRAD, "tolerance_change": 0.0, "history_size": HISTORY,
}

Tree = Any


@dataclass(frozen=True)
class Problem:
    """An objective in JAX and in torch over the same parameter tree, and its start."""

    name: str
    x0: Tree  # numpy float64 arrays
    loss: Callable[[Tree], jax.Array]
    torch_loss: Callable[[Tree], torch.Tensor]


class Run(NamedTuple):
    """One solve: its wall time (s), final params (numpy tree), iterations, evaluations."""

    seconds: float
    params: Tree
    iters: int
    evals: int


@dataclass
class Row:
    """One (problem, solver) line of the report."""

    problem: str
    solver: str
    loss: float
    max_grad: float
    iters: int
    evals: int
    seconds: float
    best: float
    compile_s: float | None


@dataclass
class Block:
    """A problem's rows, the CPU cores other processes used while it ran, and the time (s) of
    one evaluation of loss and gradient in JAX (jitted) and in torch."""

    problem: str
    others: float
    rows: dict[str, Row]
    eval_jax: float
    eval_torch: float


# -- problems --------------------------------------------------------------------------------


def rosenbrock(x: Any, xp: Any = jnp) -> Any:
    """The chained Rosenbrock function, for JAX (``xp=jnp``) or torch (``xp=torch``)."""
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_problem(n: int) -> Problem:
    return Problem(f"Rosenbrock {n}-d", np.array([-1.2, 1.0] * (n // 2)), rosenbrock,
                   lambda x: rosenbrock(x, torch))


def digits_problem() -> Problem:
    """L2-regularised softmax regression on the digits, params ``{'W', 'b'}`` from zero."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float64)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def loss(p: Tree) -> jax.Array:
        log_probs = jax.nn.log_softmax(x @ p["W"] + p["b"])
        nll = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
        return nll + L2 / 2 * jnp.sum(p["W"] ** 2)

    def torch_loss(p: Tree) -> torch.Tensor:
        nll = torch.nn.functional.cross_entropy(tx @ p["W"] + p["b"], ty)
        return nll + L2 / 2 * torch.sum(p["W"] ** 2)

    x0 = {"W": np.zeros((64, 10)), "b": np.zeros(10)}
    return Problem("digits softmax regression", x0, loss, torch_loss)


def problems(quick: bool, tiny: bool = False) -> list[Problem]:
    """The problems of a full run; ``quick``: the 2-d and 100-d Rosenbrocks; ``tiny``: 2-d."""
    if tiny:
        return [rosenbrock_problem(2)]
    rosenbrocks = [rosenbrock_problem(n) for n in ((2, 100) if quick else (2, 100, 1000))]
    return rosenbrocks if quick else rosenbrocks + [digits_problem()]


# -- solvers: each ``make_*(problem)`` returns a function that solves from x0 once -----------


def to_numpy(tree: Tree) -> Tree:
    return jax.tree.map(np.asarray, tree)


def max_abs(tree: Tree) -> jax.Array:
    return reduce(jnp.maximum, [jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)])


def make_optim_jax(problem: Problem) -> Callable[[], Run]:
    """``optim_jax.LBFGS``: one ``step(closure)``; runs reuse the optimiser (and its compile).

    Each run resets the optimiser for the next one after its timer stops: right before the
    timer, the reset's milliseconds of Python would leave the step to start with cold caches
    (about 45 us more on 2-d Rosenbrock), a cost no other solver's light setup incurs.
    """
    fresh = lambda: jax.tree.map(jnp.array, problem.x0)  # noqa: E731  (steps donate params)
    template = optim_jax.LBFGS(fresh(), **LBFGS_OPTIONS)
    opt = optim_jax.LBFGS(fresh(), **LBFGS_OPTIONS)

    def reset() -> None:
        opt.load_state_dict(template.state_dict())
        opt.param_groups[0]["params"] = fresh()
        opt._prepare()  # load_state_dict dropped it; the next step would rebuild it once
        jax.block_until_ready((opt.params, dict(opt.state)))

    def run() -> Run:
        start = time.perf_counter()
        opt.step(problem.loss)
        jax.block_until_ready(opt.params)
        seconds = time.perf_counter() - start
        state = opt.state[0]
        result = Run(seconds, to_numpy(opt.params), int(state["n_iter"]),
                     int(state["func_evals"]))
        reset()
        return result

    reset()
    return run


def make_torch(problem: Problem) -> Callable[[], Run]:
    """``torch.optim.LBFGS`` on float64 tensors, a fresh optimiser per run."""

    def run() -> Run:
        params = jax.tree.map(lambda a: torch.tensor(a, requires_grad=True), problem.x0)
        leaves = jax.tree.leaves(params)
        opt = torch.optim.LBFGS(leaves, **LBFGS_OPTIONS)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = problem.torch_loss(params)
            loss.backward()
            return loss

        start = time.perf_counter()
        opt.step(closure)
        seconds = time.perf_counter() - start
        state = opt.state[leaves[0]]
        final = jax.tree.map(lambda t: t.detach().numpy().copy(), params)
        return Run(seconds, final, state["n_iter"], state["func_evals"])

    return run


def make_scipy(problem: Problem) -> Callable[[], Run]:
    """scipy's L-BFGS-B on a flat vector, the objective a jitted ``value_and_grad``."""
    x0, unravel = ravel_pytree(problem.x0)
    value_and_grad = jax.jit(jax.value_and_grad(lambda v: problem.loss(unravel(v))))

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(v)
        return float(value), np.asarray(grad)

    options = {"maxiter": MAX_ITER, "gtol": TOLERANCE_GRAD, "maxcor": HISTORY,
               "maxfun": MAX_EVAL, "ftol": 0.0}

    def run() -> Run:
        start = time.perf_counter()
        result = scipy.optimize.minimize(fun, np.asarray(x0), jac=True, method="L-BFGS-B",
                                         options=options)
        seconds = time.perf_counter() - start
        return Run(seconds, to_numpy(unravel(result.x)), int(result.nit), int(result.nfev))

    return run


def optax_solve(fun: Callable[[Tree], jax.Array], params: Tree) -> tuple[Tree, Any, Any]:
    """optax's L-BFGS loop: ``(params, iterations, evaluations)`` at max|g| <= tol or the cap."""
    tx = optax.lbfgs(memory_size=HISTORY)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry):
        params, state, k, evals, _ = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        steps = optax.tree.get(state, "num_linesearch_steps")
        gmax = max_abs(optax.tree.get(state, "grad"))
        return optax.apply_updates(params, updates), state, k + 1, evals + steps, gmax

    def keep_going(carry):
        _, _, k, _, gmax = carry
        return (k < MAX_ITER) & (gmax > TOLERANCE_GRAD)

    # max|g| = inf: the first iteration evaluates at x0 (and the count's 1 is that evaluation)
    start = (params, tx.init(params), jnp.asarray(0), jnp.asarray(1), jnp.asarray(jnp.inf))
    params, _, k, evals, _ = jax.lax.while_loop(keep_going, body, start)
    return params, k, evals


def make_optax(problem: Problem) -> Callable[[], Run]:
    """optax.lbfgs in one jitted ``lax.while_loop``."""
    solve = jax.jit(lambda p: optax_solve(problem.loss, p))

    def run() -> Run:
        x0 = jax.tree.map(jnp.array, problem.x0)
        start = time.perf_counter()
        params, k, evals = jax.block_until_ready(solve(x0))
        seconds = time.perf_counter() - start
        return Run(seconds, to_numpy(params), int(k), int(evals))

    return run


MAKERS = {"optim_jax": make_optim_jax, "torch": make_torch, "scipy": make_scipy,
          "optax": make_optax}


# -- timing and report -----------------------------------------------------------------------


class CpuClock:
    """Wall time and the CPU seconds other processes used since it was made."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()

    def elapsed(self) -> float:
        return time.perf_counter() - self.wall

    def others(self) -> float:
        """Average cores used by other processes (0 = an uncontended run)."""
        other = busy_cpu_seconds() - self.busy - (own_cpu_seconds() - self.own)
        return max(other, 0.0) / self.elapsed()


def evaluation_seconds(problem: Problem, chain: int = 100, calls: int = 7) -> tuple[float, float]:
    """Time of one loss-and-gradient evaluation: in JAX, a compiled loop of ``chain``
    evaluations, each at a point that depends on the last (as in a line search, with no dispatch
    per evaluation), divided by ``chain``; in torch, one forward and backward at x0."""
    value_and_grad = jax.value_and_grad(problem.loss)

    def evaluations(params: Tree) -> jax.Array:
        def body(_: Any, carry: tuple[Tree, jax.Array]) -> tuple[Tree, jax.Array]:
            value, grad = value_and_grad(carry[0])
            return jax.tree.map(lambda p, g: p + 0.0 * g, carry[0], grad), value

        return jax.lax.fori_loop(0, chain, body, (params, jnp.zeros([])))[1]

    jitted = jax.jit(evaluations)
    x0 = jax.tree.map(jnp.asarray, problem.x0)
    params = jax.tree.map(lambda a: torch.tensor(a, requires_grad=True), problem.x0)

    def torch_evaluation() -> None:
        for leaf in jax.tree.leaves(params):
            leaf.grad = None
        problem.torch_loss(params).backward()

    def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    # torch first: XLA's worker threads still spinning after a JAX run slow torch's threads
    torch_seconds = median_seconds(torch_evaluation, calls * 10)
    return median_seconds(lambda: jax.block_until_ready(jitted(x0)), calls) / chain, torch_seconds


def final_loss_and_grad(problem: Problem, params: Tree) -> tuple[float, float]:
    """The loss and max|g| at ``params``, in JAX."""
    value, grad = jax.value_and_grad(problem.loss)(jax.tree.map(jnp.asarray, params))
    return float(value), float(max_abs(grad))


def run_problem(problem: Problem, repeats: int) -> Block:
    """Every solver on ``problem``: a first call each, then ``repeats`` runs taking turns."""
    clock = CpuClock()
    runners = {name: MAKERS[name](problem) for name in SOLVERS}
    first = {name: runner() for name, runner in runners.items()}
    runs: dict[str, list[Run]] = {name: [] for name in SOLVERS}
    for _ in range(repeats):
        for name, runner in runners.items():
            runs[name].append(runner())
    rows = {}
    for name in SOLVERS:
        times = [r.seconds for r in runs[name]]
        median = statistics.median(times)
        last = runs[name][-1]
        loss, max_grad = final_loss_and_grad(problem, last.params)
        compile_s = first[name].seconds - median if name in COMPILED else None
        rows[name] = Row(problem.name, name, loss, max_grad, last.iters, last.evals, median,
                         min(times), compile_s)
    return Block(problem.name, clock.others(), rows, *evaluation_seconds(problem))


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or a dash when missing."""
    return "-" if value is None else format(value, spec)


def markdown_table(header: str, align: str, rows: list[str]) -> str:
    """A markdown table: ``header`` and ``align`` are its first two rows without the outer
    pipes (``"problem | solver"``, ``"---|---:"``); ``rows`` are whole lines."""
    return "\n".join([f"| {header} |", f"|{align}|", *rows])


def results_table(blocks: list[Block]) -> str:
    return markdown_table(
        "problem | solver | final loss | max abs g | iters | evals | wall ms | min ms "
        "| compile s", "---|---|---:|---:|---:|---:|---:|---:|---:",
        [f"| {r.problem} | {r.solver} | {r.loss:.6e} | {r.max_grad:.1e} | {r.iters} "
         f"| {r.evals} | {r.seconds * 1e3:.3f} | {r.best * 1e3:.3f} "
         f"| {fmt(r.compile_s, '.2f')} |"
         for block in blocks for r in block.rows.values()],
    )


def targets(block: Block) -> tuple[float, float, float, list[bool]]:
    """optim_jax's wall time over torch's and optax's, its evaluations over torch's, and the
    three targets (evaluations <= torch's, wall <= 0.2x torch's, wall <= optax's)."""
    ours, theirs, optax_row = (block.rows[n] for n in ("optim_jax", "torch", "optax"))
    x_torch, x_optax = ours.seconds / theirs.seconds, ours.seconds / optax_row.seconds
    x_evals = ours.evals / theirs.evals
    return x_torch, x_optax, x_evals, [ours.evals <= theirs.evals, x_torch <= 0.2, x_optax <= 1.0]


def summary_table(blocks: list[Block]) -> str:
    rows = []
    for block in blocks:
        x_torch, x_optax, x_evals, met = targets(block)
        marks = " | ".join("yes" if m else "**no**" for m in met)
        rows.append(f"| {block.problem} | {x_torch:.3f} | {x_optax:.2f} | {x_evals:.2f} "
                    f"| {marks} | {block.others:.2f} |")
    return markdown_table(
        "problem | wall / torch | wall / optax | evals / torch | evals <= torch "
        "| wall <= 0.2x torch | wall <= optax | other processes (cores)",
        "---|---:|---:|---:|---|---|---|---:", rows)


def evaluation_table(blocks: list[Block]) -> str:
    rows = []
    for block in blocks:
        ours, theirs = block.rows["optim_jax"], block.rows["torch"]
        floor = ours.evals * block.eval_jax / theirs.seconds
        rows.append(f"| {block.problem} | {block.eval_jax * 1e3:.4f} | "
                    f"{block.eval_torch * 1e3:.4f} | {ours.evals} | {floor:.3f} |")
    return markdown_table(
        "problem | one JAX evaluation ms | one torch evaluation ms | optim_jax evals "
        "| evals x JAX evaluation / torch wall", "---|---:|---:|---:|---:", rows)


def verdict(blocks: list[Block]) -> str:
    names = ("evaluations <= torch's", "wall time <= 0.2x torch's", "wall time <= optax's")
    met = [all(targets(b)[3][i] for b in blocks) for i in range(len(names))]
    return "- targets (optim_jax, every problem): " + "; ".join(
        f"{name}: {'met' if ok else 'NOT met'}" for name, ok in zip(names, met)
    )


def header(threads: int, repeats: int) -> str:
    """Versions and machine facts the numbers depend on."""
    return "\n".join([
        "# L-BFGS full-solve benchmark",
        "",
        f"- jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}, "
        f"torch {torch.__version__}, scipy {scipy.__version__}, "
        f"optim_jax {optim_jax.__version__}, python {platform.python_version()}",
        f"- {cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
        f"torch.set_num_threads({threads}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        f"- float64; stop at max|g| <= {TOLERANCE_GRAD:g} or {MAX_ITER} iterations; history "
        f"{HISTORY}; optim_jax/torch: strong Wolfe, max_eval={MAX_EVAL}, tolerance_change=0; "
        f"scipy: ftol=0, maxfun={MAX_EVAL}; optax: zoom line search",
        f"- wall ms: median of {repeats} timed runs after a first call (min ms: the fastest, a "
        "hint of noise); compile s: first call minus that median; final loss and max abs g "
        "recomputed in JAX at the returned params",
        "- evals: optim_jax/torch func_evals, scipy nfev, optax 1 + sum of num_linesearch_steps",
    ])


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark, prints the report and returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-d and 100-d Rosenbrock, 1 run")
    parser.add_argument("--tiny", action="store_true",
                        help="2-d Rosenbrock, 1 run: every solver's row (the tests' mode)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    args = parser.parse_args(argv)
    threads, repeats = cpu_count(), 1 if args.quick or args.tiny else REPEATS
    torch.set_num_threads(threads)
    print(header(threads, repeats), flush=True)
    clock, blocks = CpuClock(), []
    for problem in problems(args.quick, args.tiny):
        blocks.append(run_problem(problem, repeats))
        print(f"  done: {problem.name}", flush=True)
    contention = (
        f"- other processes used {clock.others():.2f} cores on average during this "
        f"{clock.elapsed():.0f} s run (near 0 means uncontended timings)"
    )
    body = (f"{contention}\n{verdict(blocks)}\n\n{results_table(blocks)}\n\n"
            f"{summary_table(blocks)}\n\n{evaluation_table(blocks)}")
    report = f"{header(threads, repeats)}\n{body}\n"
    return publish(report, body, args.markdown)


if __name__ == "__main__":
    main()
