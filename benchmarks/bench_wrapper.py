"""Training-step benchmark: optim_jax's stateful ``Adam`` wrapper against the alternatives.

One full training step of an MLP 784-256-256-10 (ReLU, float32, batch 128, softmax
cross-entropy, Adam with lr=1e-3) in five implementations:

* (a) hand-written ``jax.jit`` step: ``value_and_grad`` + ``optax.adam`` update +
  ``optax.apply_updates``, params and optimiser state donated. The baseline.
* (b) ``optim_jax.Adam`` used as torch is: each iteration defines
  ``def closure(p): return loss_fn(p, x, y)`` and calls ``opt.step(closure)``.
* (c) flax ``nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)`` with an ``nnx.jit`` train
  step (model and optimizer donated).
* (d) ``optim_jax.Adam(model)`` on (c)'s nnx module, ``opt.step(closure, x, y)`` with
  ``closure(model, x, y)``; the new values are written back into the module every step.
* (e) torch eager: ``nn.Sequential`` MLP, ``torch.optim.Adam`` (default foreach),
  ``zero_grad`` / forward / loss / ``backward`` / ``step``.

All five start from the same weights and train on the same synthetic batches (fixed seed, a
few batches cycled so no step can reuse a previous result). Each step is timed completely with
``time.perf_counter``: JAX steps block on the loss and every parameter array before the clock
stops; torch on CPU is synchronous. Reported: median ms/step over the timed steps (after
warm-up, which includes compilation) with p10/p90, the ratio of medians to (a), and the loss
after the last step (the same problem is trained everywhere, so these should agree closely).

Run::

    python benchmarks/bench_wrapper.py                      # 200 timed steps each
    python benchmarks/bench_wrapper.py --quick              # 20 steps: smoke test only
    python benchmarks/bench_wrapper.py --tiny               # a tiny MLP, 2 steps: every row (tests)
    python benchmarks/bench_wrapper.py --markdown out.md    # also write the table to out.md
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from typing import Callable

# torch's OpenMP workers sleep between steps instead of spinning into the others' turns
# (bench_step.py says why, with the measurement). Set before torch starts its threads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

import optim_jax  # noqa: E402

SIZES = (784, 256, 256, 10)
BATCH = 128
TINY_SIZES, TINY_BATCH = (16, 8, 8, 10), 8  # --tiny: every row, meaningless timings (tests)
N_BATCHES = 4
LR = 1e-3
SEED = 0
WARMUP = 5

Batches = list[tuple[np.ndarray, np.ndarray]]
Weights = list[tuple[np.ndarray, np.ndarray]]
Step = Callable[[int], "jax.Array | torch.Tensor"]


# -- shared problem -------------------------------------------------------------------------


def make_problem(seed: int = SEED, sizes: tuple[int, ...] = SIZES,
                 batch: int = BATCH) -> tuple[Weights, Batches]:
    """Initial weights (torch's default uniform init; kernels ``(in, out)``) and the batches."""
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        b = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
        weights.append((w, b))
    batches = [
        (
            rng.standard_normal((batch, sizes[0]), dtype=np.float32),
            rng.integers(0, sizes[-1], batch).astype(np.int32),
        )
        for _ in range(N_BATCHES)
    ]
    return weights, batches


def mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The plain-JAX MLP of (a) and (b): ``params`` holds ``w0, b0, w1, b1, ...``."""
    n_layers = len(params) // 2
    for i in range(n_layers):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            x = jax.nn.relu(x)
    return x


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of the MLP's logits against integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()


def jax_params(weights: Weights) -> dict[str, jax.Array]:
    return {
        name: jnp.asarray(value)
        for i, (w, b) in enumerate(weights)
        for name, value in ((f"w{i}", w), (f"b{i}", b))
    }


def jax_batches(batches: Batches) -> list[tuple[jax.Array, jax.Array]]:
    return [(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]


# -- the five implementations: each returns step(i) -> loss, the step complete on return --------


def optax_step(weights: Weights, batches: Batches) -> Step:
    """(a) A hand-written jitted step with ``optax.adam``; params and state donated."""
    tx = optax.adam(LR)
    params = jax_params(weights)
    carry = [params, tx.init(params)]
    data = jax_batches(batches)

    @jax.jit(donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state

    def step(i: int) -> jax.Array:
        x, y = data[i % len(data)]
        loss, carry[0], carry[1] = train_step(carry[0], carry[1], x, y)
        jax.block_until_ready((loss, carry[0]))
        return loss

    return step


def optim_jax_step(weights: Weights, batches: Batches) -> Step:
    """(b) ``optim_jax.Adam`` with torch's idiom: a new closure over the batch every step."""
    opt = optim_jax.Adam(jax_params(weights), lr=LR)
    data = jax_batches(batches)

    def step(i: int) -> jax.Array:
        x, y = data[i % len(data)]

        def closure(p):
            return loss_fn(p, x, y)

        loss = opt.step(closure)
        jax.block_until_ready((loss, opt.params))
        return loss

    return step


class NnxMLP(nnx.Module):
    """(c)'s model: ``nnx.Linear`` layers of the weights' sizes, ReLU between them."""

    def __init__(self, weights: Weights):
        rngs = nnx.Rngs(SEED)
        self.layers = nnx.List(
            [nnx.Linear(w.shape[0], w.shape[1], rngs=rngs) for w, _ in weights]
        )
        for layer, (w, b) in zip(self.layers, weights):
            layer.kernel[...] = jnp.asarray(w)
            layer.bias[...] = jnp.asarray(b)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def nnx_step(weights: Weights, batches: Batches) -> Step:
    """(c) flax ``nnx.Optimizer`` with an ``nnx.jit`` train step; model and optimizer donated."""
    model = NnxMLP(weights)
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    param_vars = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    data = jax_batches(batches)

    @nnx.jit(donate_argnames=("model", "optimizer"))
    def train_step(model, optimizer, x, y):
        def model_loss(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(model_loss)(model)
        optimizer.update(model, grads)
        return loss

    def step(i: int) -> jax.Array:
        x, y = data[i % len(data)]
        loss = train_step(model, optimizer, x, y)
        jax.block_until_ready((loss, [v[...] for v in param_vars]))
        return loss

    return step


def optim_jax_nnx_step(weights: Weights, batches: Batches) -> Step:
    """(d) ``optim_jax.Adam(model)`` on (c)'s nnx module: ``opt.step(closure, x, y)`` with
    ``closure(model, x, y)``, new values written back into the module after each step."""
    model = NnxMLP(weights)
    opt = optim_jax.Adam(model, lr=LR)
    param_vars = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    data = jax_batches(batches)

    def closure(model: NnxMLP, x: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    def step(i: int) -> jax.Array:
        x, y = data[i % len(data)]
        loss = opt.step(closure, x, y)
        jax.block_until_ready((loss, [v[...] for v in param_vars]))
        return loss

    return step


def torch_step(weights: Weights, batches: Batches) -> Step:
    """(e) torch eager: ``torch.optim.Adam`` (default foreach) on an ``nn.Sequential`` MLP."""
    layers: list[torch.nn.Module] = []
    for w, b in weights:
        linear = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    data = [(torch.from_numpy(x), torch.from_numpy(y).long()) for x, y in batches]

    def step(i: int) -> torch.Tensor:
        x, y = data[i % len(data)]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


IMPLEMENTATIONS: dict[str, Callable[[Weights, Batches], Step]] = {
    "(a) jax.jit + optax.adam (baseline)": optax_step,
    "(b) optim_jax.Adam, opt.step(closure)": optim_jax_step,
    "(c) flax nnx.Optimizer + nnx.jit": nnx_step,
    "(d) optim_jax.Adam(nnx model), opt.step(closure, x, y)": optim_jax_nnx_step,
    "(e) torch eager, torch.optim.Adam": torch_step,
}


# -- timing and report ------------------------------------------------------------------------


def time_round_robin(steps: dict[str, Step], count: int, warmup: int = WARMUP,
                     collect: bool = True) -> dict[str, tuple[list[float], float]]:
    """Milliseconds of ``count`` timed steps of each implementation, and its last loss.

    The implementations take turns step by step, so a slow spell of the machine (another
    process, frequency scaling) lands on all of them alike instead of on one block of steps.
    """
    for i in range(warmup):
        for step in steps.values():
            step(i)
    if collect:  # not for --tiny: in a process with many objects (a test run), a collection
        gc.collect()  # would take longer than everything else the tiny run does
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, float] = {}
    for i in range(warmup, warmup + count):
        for name, step in steps.items():
            start = time.perf_counter()
            loss = step(i)
            times[name].append((time.perf_counter() - start) * 1e3)
            losses[name] = loss
    return {name: (times[name], float(losses[name])) for name in steps}


def header() -> str:
    return (
        f"jax {jax.__version__} ({jax.default_backend()}), flax {flax.__version__}, "
        f"optax {optax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
    )


def report(results: dict[str, tuple[list[float], float]], steps: int,
           sizes: tuple[int, ...] = SIZES, batch: int = BATCH, warmup: int = WARMUP) -> str:
    """The markdown table: median, p10 and p90 ms/step, ratio of medians to (a), final loss."""
    baseline = statistics.median(next(iter(results.values()))[0])
    lines = [
        header(),
        "",
        f"MLP {'-'.join(map(str, sizes))}, batch {batch}, float32, Adam lr={LR}; "
        f"{steps} timed steps each after {warmup} warm-up steps; (a)-(d) take turns step by step.",
        "",
        "| implementation | ms/step (median) | p10 | p90 | vs (a) | loss after last step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (times, loss) in results.items():
        median = statistics.median(times)
        deciles = statistics.quantiles(times, n=10)
        lines.append(
            f"| {name} | {median:.3f} | {deciles[0]:.3f} | {deciles[-1]:.3f} "
            f"| {median / baseline:.2f} | {loss:.5f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark, prints the table and returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per implementation")
    parser.add_argument("--quick", action="store_true", help="20 timed steps (smoke test)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"MLP {'-'.join(map(str, TINY_SIZES))}, batch {TINY_BATCH}, one warm-up "
                             "and 2 timed steps: checks that every row is produced (the tests' "
                             "mode; the timings mean nothing)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")
    args = parser.parse_args(argv)
    steps = 2 if args.tiny else 20 if args.quick else args.steps
    warmup = 1 if args.tiny else WARMUP
    sizes, batch = (TINY_SIZES, TINY_BATCH) if args.tiny else (SIZES, BATCH)
    torch.set_num_threads(os.cpu_count() or 1)
    weights, batches = make_problem(SEED, sizes, batch)
    steps_by_name = {name: make(weights, batches) for name, make in IMPLEMENTATIONS.items()}
    # torch's OpenMP workers keep spinning after a step and would slow whichever JAX step ran
    # next: the JAX implementations take turns among themselves, torch is timed on its own.
    torch_names = [name for name in steps_by_name if "torch" in name]
    results = time_round_robin({n: s for n, s in steps_by_name.items() if n not in torch_names},
                               steps, warmup, collect=not args.tiny)
    results.update(time_round_robin({n: steps_by_name[n] for n in torch_names}, steps, warmup,
                                    collect=not args.tiny))
    table = report(results, steps, sizes, batch, warmup)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return table


if __name__ == "__main__":
    main()
