"""Step-time benchmark: optim_jax vs optax vs torch.optim, against a memory-bandwidth roof.

Times one Adam step and one SGD-momentum step (momentum=0.9) on float32 parameters: one leaf of
1M, 10M and 50M elements, and many-leaf trees (1000 leaves x 1k, 200 leaves x 50k). Each
implementation runs as a training loop would: every step's outputs feed the next step.

* optim_jax and optax: ``update`` + ``apply_updates`` under ``jax.jit`` with params and state
  donated; each step is blocked on (``block_until_ready``) before the clock stops. Every
  implementation takes its turn step by step, so machine noise cannot favour any.
* torch.optim: ``Adam`` / ``SGD`` with ``foreach=False``, ``foreach=True`` and ``fused=True``
  (a row is skipped, with a note, where torch refuses the flavour on CPU), taking their turns
  in the same loop. Timed alone, each torch step found the previous one's arrays (up to 600 MB)
  still in this host's large cache, which no training loop gives (a forward and a backward
  pass run between two steps): 1 x 10M SGD fused took 3.5 ms alone, 4.6 ms taking turns.

Reported: median ms per step after warm-up (and the fastest step, a hint of noise), effective
GB/s (Adam moves 28 bytes per parameter: reads p, g, m, v and writes p, m, v; SGD-momentum moves
20: reads p, g, b and writes p, b), and time ratios to the roof and to optax (1.00 = as fast,
2.00 = twice as slow). The roof is a jitted ``a + s * b`` with ``a`` donated, timed on one flat
array of the case's total size; its GB/s, applied to the algorithm's bytes, gives the roof time.
Many-leaf cases also time the same kernel leaf by leaf, and every case a jit "round trip"
(optim_jax's step inputs and outputs, donated, no arithmetic): together they separate per-leaf
overhead from the optimisers' arithmetic. The report says how much CPU other processes took
during the run: on a shared machine they distort the timings, torch's OpenMP threads most of all.

Run::

    python benchmarks/bench_step.py                     # full run, a few minutes on 2 cores
    python benchmarks/bench_step.py --quick             # small sizes, few repeats (smoke test)
    python benchmarks/bench_step.py --tiny              # every row once, meaningless timings (tests)
    python benchmarks/bench_step.py --markdown out.md   # also write the report to out.md
    python benchmarks/bench_step.py --algorithms        # every algorithm vs optax and torch
    python benchmarks/bench_step.py --first-step        # time to the first step, fresh processes
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

# torch's OpenMP workers (libgomp) spin for ~16 ms after each parallel region by default. On 2
# cores, taking turns with XLA's steps, that spinning takes a core from whichever step runs next
# (measured: optim_jax's Adam on 1 x 10M, 8.8 ms after torch's step against 7.1 ms with a short
# spin). A short spin lets the workers sleep between steps; torch's own times do not change
# (fused Adam on 200 x 50k: 8.2 ms either way). Set before torch starts its threads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import optim_jax  # noqa: E402

LR = 1e-3
MOMENTUM = 0.9
WARMUP = 3
BYTES_PER_PARAM = {"adam": 28, "sgd": 20}
ROOF_BYTES_PER_ELEMENT = 12  # a + s * b: reads a and b, writes a
ROUND_TRIP = "jit round trip only"
STATEFUL_GRAD = "optim_jax class: opt.grad = g; step()"
STATEFUL_CLOSURE = "optim_jax class: step(closure)"
OPTAX_GRAD = "optax: value_and_grad of the closure's loss + update"
CONTIGUOUS = "optim_jax contiguous(tx)"
TORCH_FLAVOURS = {
    "foreach=False": {"foreach": False},
    "foreach=True": {"foreach": True},
    "fused=True": {"fused": True},
}


@dataclass(frozen=True)
class Case:
    """A parameter tree of ``leaves`` float32 leaves of ``size`` elements, timed ``repeats``x."""

    name: str
    leaves: int
    size: int
    repeats: int

    @property
    def numel(self) -> int:
        return self.leaves * self.size


FULL_CASES = (
    Case("1 leaf x 1M", 1, 1_000_000, 200),
    Case("1 leaf x 10M", 1, 10_000_000, 50),
    Case("1 leaf x 50M", 1, 50_000_000, 15),
    Case("1000 leaves x 1k", 1000, 1_000, 200),
    Case("200 leaves x 50k", 200, 50_000, 50),
)
QUICK_CASES = (
    Case("1 leaf x 100k", 1, 100_000, 3),
    Case("20 leaves x 1k", 20, 1_000, 3),
)
TINY_CASES = (Case("3 leaves x 64", 3, 64, 1),)  # every kind of row, once: what the tests run


# --tiny switches collections off: its arrays are small, and in a process holding many objects
# (a test run) each collection takes longer than everything else the tiny run does.
COLLECT_GARBAGE = True


def release_memory() -> None:
    """Collects garbage between implementations, so one's big arrays do not weigh on the next."""
    if COLLECT_GARBAGE:
        gc.collect()


class Flush:
    """Work run, untimed, before every timed step: a jitted, donated sweep over ``floats``
    float32 (64 MB in a full run), as a training step follows a forward and a backward pass.

    Every implementation then finds the machine in the same state (caches, XLA's and torch's
    threads) whichever ran before it. In a fixed order each step inherits its predecessor's
    aftermath, and not alike (measured, 1 x 10M Adam: optim_jax's class 4.31 ms after a torch
    step, 4.51 after an XLA step, 5.41 after optax's value_and_grad step; torch's fused step
    4.39, 4.70 and 5.61), so the order, not the implementation, would decide a few percent.
    """

    def __init__(self, floats: int) -> None:
        self.buffer = jnp.zeros(floats, jnp.float32)
        self.sweep = jax.jit(lambda x: x + 1.0, donate_argnums=0)

    def __call__(self) -> None:
        self.buffer = self.sweep(self.buffer)
        self.buffer.block_until_ready()


FLUSH_FLOATS = {"full": 1 << 24, "tiny": 1 << 10}
BETWEEN_STEPS: Callable[[], None] = lambda: None  # main() sets a Flush


class Timing(NamedTuple):
    """Median and fastest of the timed steps, in ms."""

    median: float
    best: float


@dataclass
class Row:
    """One line of the report; ``timing`` is None for a skipped implementation."""

    case: str
    algo: str
    impl: str
    timing: Timing | None
    gbps: float | None = None
    x_roof: float | None = None
    x_optax: float | None = None
    note: str = ""

    @property
    def ms(self) -> float | None:
        return None if self.timing is None else self.timing.median


def cpu_count() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cpu_seconds() -> float:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``; 0 elsewhere)."""
    if not os.path.exists("/proc/stat"):
        return 0.0
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process and its finished children (the fresh processes of
    ``--first-step``) have used."""
    return sum(os.times()[:4])


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, Timing]:
    """Wall time of each step function over ``repeats`` calls, after ``WARMUP`` calls.

    The functions take turns call by call, so a slow spell of the machine lands on all of them
    alike; their ratios are then far steadier than those of back-to-back blocks. Each timed
    call follows the same untimed work (:class:`Flush`), not its neighbour in the order.
    """
    for step in steps.values():
        for _ in range(WARMUP):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            BETWEEN_STEPS()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {
        name: Timing(1e3 * statistics.median(t), 1e3 * min(t)) for name, t in times.items()
    }


def time_steps(step: Callable[[], None], repeats: int) -> Timing:
    """Wall time of ``step`` over ``repeats`` calls, after ``WARMUP`` calls."""
    return time_interleaved({"step": step}, repeats)["step"]


def host_tree(case: Case, seed: int) -> list[np.ndarray]:
    """``case.leaves`` random float32 numpy arrays of ``case.size`` elements."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(case.size, dtype=np.float32) for _ in range(case.leaves)]


def jit_loop(fn: Callable, params: Any, state: Any, grads: Any) -> Callable[[], None]:
    """One training-loop step of ``fn(params, state, grads) -> (params, state)``, jitted with
    params and state donated, each step's outputs fed to the next."""
    step = jax.jit(fn, donate_argnums=(0, 1))
    carry = [params, state]

    def one_step() -> None:
        carry[:] = step(carry[0], carry[1], grads)
        jax.block_until_ready(carry)

    return one_step


def jax_step(tx: Any, apply: Callable, params: list, grads: list) -> Callable[[], None]:
    """A training-loop step: ``tx.update`` then ``apply``."""

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return apply(p, updates), s

    return jit_loop(step, params, tx.init(params), grads)


def linear_loss(params: list, grads: list) -> jax.Array:
    """A loss whose gradient is ``grads``: what the closure rows differentiate."""
    return sum(jnp.vdot(x, g) for x, g in zip(params, grads))


def stateful_steps(algo: str, params: list, grads: list) -> dict[str, Callable[[], None]]:
    """The stateful class's training-loop steps: ``opt.grad = grads; opt.step()`` and
    ``opt.step(closure)`` with a loss whose gradient is ``grads``; and, for the closure, optax's
    jitted gradient of the same loss and update."""
    make = (lambda p: optim_jax.Adam(p, lr=LR)) if algo == "adam" else (
        lambda p: optim_jax.SGD(p, lr=LR, momentum=MOMENTUM))
    given, closed = make(params), make([jnp.array(p) for p in params])
    tx = jax_transforms(algo)["optax"][0]

    def loss(p):
        return linear_loss(p, grads)

    def optax_step(p, s, g):  # returns the loss, as step(closure) does
        value, grads = jax.value_and_grad(linear_loss)(p, g)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), (s, value)

    def step_after_grad() -> None:
        given.grad = grads
        given.step()
        jax.block_until_ready(given._records[0].state)

    def step_closure() -> None:
        jax.block_until_ready(closed.step(loss))
        jax.block_until_ready(closed._records[0].state)

    optax_grad = jit_loop(lambda p, s, g: optax_step(p, s[0], g),
                          [jnp.array(p) for p in params], (tx.init(params), jnp.float32(0)), grads)
    return {STATEFUL_GRAD: step_after_grad, STATEFUL_CLOSURE: step_closure,
            OPTAX_GRAD: optax_grad}


def time_round_trip(tx: Any, params: list, grads: list, repeats: int) -> Timing:
    """Times a jitted call with the step's inputs and outputs and no arithmetic."""
    return time_steps(jit_loop(lambda p, s, g: (p, s), params, tx.init(params), grads), repeats)


def jax_transforms(algo: str) -> dict[str, tuple[Any, Callable]]:
    """The JAX implementations of ``algo``: name -> (transform, apply_updates)."""
    if algo == "adam":
        return {
            "optim_jax": (optim_jax.adam(lr=LR), optim_jax.apply_updates),
            "optax": (optax.adam(LR), optax.apply_updates),
            CONTIGUOUS: (optim_jax.contiguous(optim_jax.adam(lr=LR)), optim_jax.apply_updates),
        }
    return {
        "optim_jax": (optim_jax.sgd(LR, momentum=MOMENTUM), optim_jax.apply_updates),
        "optax": (optax.sgd(LR, momentum=MOMENTUM), optax.apply_updates),
        CONTIGUOUS: (optim_jax.contiguous(optim_jax.sgd(LR, momentum=MOMENTUM)),
                     optim_jax.apply_updates),
    }


def torch_optimizer(algo: str, params: list[torch.Tensor], flavour: dict) -> torch.optim.Optimizer:
    """torch's ``Adam`` or ``SGD(momentum=0.9)`` over ``params`` with a foreach/fused flavour."""
    if algo == "adam":
        return torch.optim.Adam(params, lr=LR, **flavour)
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, **flavour)


def torch_steps(
    case: Case, algo: str, host_params: list[np.ndarray], host_grads: list[np.ndarray],
) -> tuple[dict[str, Callable[[], None]], list[Row]]:
    """``optimizer.step()`` of each torch flavour, and a row for each flavour torch refuses."""
    steps, refused = {}, []
    for name, flavour in TORCH_FLAVOURS.items():
        params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in host_params]
        for p, g in zip(params, host_grads):
            p.grad = torch.from_numpy(g)
        optimizer = torch_optimizer(algo, params, flavour)

        def step(optimizer=optimizer) -> None:
            with torch.no_grad():
                optimizer.step()

        try:
            step()  # torch refuses a flavour at construction or at the first step
            steps[f"torch {name}"] = step
        except (RuntimeError, ValueError, NotImplementedError) as e:
            refused.append(Row(case.name, algo, f"torch {name}", None,
                               note=f"skipped: {str(e)[:60]}"))
    return steps, refused


def time_roof(leaves: list, repeats: int) -> Timing:
    """Times a jitted, donated ``a + s * b`` over every leaf of ``leaves``."""
    step = jax.jit(lambda a, b: [x + 1e-3 * y for x, y in zip(a, b)], donate_argnums=0)
    carry = [[jnp.array(x) for x in leaves]]
    others = [jnp.array(x) for x in leaves]

    def one_step() -> None:
        carry[0] = step(carry[0], others)
        jax.block_until_ready(carry[0])

    return time_steps(one_step, repeats)


def roof_rows(case: Case, host_grads: list[np.ndarray]) -> tuple[float, list[Row]]:
    """The flat roof's GB/s and its rows (plus the per-leaf kernel for many-leaf cases)."""
    nbytes = ROOF_BYTES_PER_ELEMENT * case.numel
    flat = time_roof([np.concatenate(host_grads)], case.repeats)
    rows = [Row(case.name, "a+s*b", "roof (1 flat array)", flat, nbytes / flat.median / 1e6, 1.0)]
    if case.leaves > 1:
        leaf = time_roof(host_grads, case.repeats)
        ratio = leaf.median / flat.median
        gbps = nbytes / leaf.median / 1e6
        rows.append(Row(case.name, "a+s*b", "same, leaf by leaf", leaf, gbps, ratio))
    return rows[0].gbps, rows


def algo_rows(
    case: Case, algo: str, host_params: list[np.ndarray], host_grads: list[np.ndarray]
) -> list[Row]:
    """Rows for every implementation of ``algo`` on ``case``, without the ratio columns."""
    grads = [jnp.array(g) for g in host_grads]
    steps = {
        impl: jax_step(tx, apply, [jnp.array(p) for p in host_params], grads)
        for impl, (tx, apply) in jax_transforms(algo).items()
    }
    steps.update(stateful_steps(algo, [jnp.array(p) for p in host_params], grads))
    torch_flavours, refused = torch_steps(case, algo, host_params, host_grads)
    steps.update(torch_flavours)
    timings = time_interleaved(steps, case.repeats)
    rows = [Row(case.name, algo, impl, timing) for impl, timing in timings.items()] + refused
    del steps, torch_flavours
    release_memory()
    tx = jax_transforms(algo)["optim_jax"][0]
    params = [jnp.array(p) for p in host_params]
    timing = time_round_trip(tx, params, grads, case.repeats)
    rows.append(Row(case.name, algo, ROUND_TRIP, timing, note="optim_jax's step I/O, no math"))
    del grads, params
    release_memory()
    return rows


def add_ratios(rows: list[Row], case: Case, algo: str, roof_gbps: float) -> None:
    """Fills GB/s, x roof and x optax into ``rows`` (all of one case and algorithm)."""
    nbytes = BYTES_PER_PARAM[algo] * case.numel
    roof_time = nbytes / roof_gbps / 1e6
    optax_ms = next(r.ms for r in rows if r.impl == "optax")
    for row in rows:
        if row.ms is not None:
            row.gbps = None if row.impl == ROUND_TRIP else nbytes / row.ms / 1e6
            row.x_roof = row.ms / roof_time
            row.x_optax = row.ms / optax_ms


def run_case(case: Case) -> list[Row]:
    """Every row of ``case``: the roofs, then Adam and SGD-momentum for each implementation."""
    host_params, host_grads = host_tree(case, 0), host_tree(case, 1)
    roof_gbps, rows = roof_rows(case, host_grads)
    for algo in BYTES_PER_PARAM:
        algo_block = algo_rows(case, algo, host_params, host_grads)
        add_ratios(algo_block, case, algo, roof_gbps)
        rows += algo_block
    return rows


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or a dash when missing."""
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| case | algo | impl | ms/step | min ms | GB/s | x roof | x optax | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        best = None if r.timing is None else r.timing.best
        lines.append(
            f"| {r.case} | {r.algo} | {r.impl} | {fmt(r.ms, '.3f')} | {fmt(best, '.3f')} "
            f"| {fmt(r.gbps, '.1f')} "
            f"| {fmt(r.x_roof, '.2f')} | {fmt(r.x_optax, '.2f')} | {r.note} |"
        )
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    """Per case and algorithm: optim_jax's times (the pure step, the class's ``step()`` after
    ``opt.grad = g``, the class's ``step(closure)``) over optax's and over the best torch
    flavour; the closure step also over optax's jitted gradient + update of the same loss."""
    lines = [
        "| case | algo | pure / optax | pure / best torch | class step() / optax "
        "| class step() / best torch | class step(closure) / optax grad+update | best torch |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    blocks = dict.fromkeys((r.case, r.algo) for r in rows if r.algo in BYTES_PER_PARAM)
    for case, algo in blocks:
        block = {r.impl: r.ms for r in rows if (r.case, r.algo) == (case, algo) and r.ms}
        best = min((impl for impl in block if impl.startswith("torch")), key=block.get)
        lines.append(
            f"| {case} | {algo} | {block['optim_jax'] / block['optax']:.2f} "
            f"| {block['optim_jax'] / block[best]:.2f} "
            f"| {block[STATEFUL_GRAD] / block['optax']:.2f} "
            f"| {block[STATEFUL_GRAD] / block[best]:.2f} "
            f"| {block[STATEFUL_CLOSURE] / block[OPTAX_GRAD]:.2f} | {best} |"
        )
    return "\n".join(lines)


def header(threads: int) -> str:
    """Versions and machine facts the numbers depend on."""
    return "\n".join([
        "# optimiser step benchmark",
        "",
        f"- jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}, "
        f"torch {torch.__version__}, optim_jax {optim_jax.__version__}, "
        f"python {platform.python_version()}",
        f"- {cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
        f"torch.set_num_threads({threads}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')} (torch's OpenMP workers sleep "
        "between steps instead of spinning ~16 ms into the next implementation's turn)",
        f"- median of timed steps after {WARMUP} warm-up steps; float32; lr={LR}, "
        f"SGD momentum={MOMENTUM}; the implementations take turns step by step, each timed "
        f"step after the same untimed sweep over {FLUSH_FLOATS['full'] * 4 >> 20} MB (as a "
        "training step follows a forward and backward pass), not after its neighbour's step",
        "- bytes per parameter: Adam 28, SGD-momentum 20; roof: jitted donated a + s*b "
        "(12 bytes/element) on one flat array of the case's size",
        "- x roof, x optax: time ratios (1.00 = as fast, 2.00 = twice as slow)",
        f"- optim_jax's CPU kernels (the classes' one-pass Adam/AdamW/SGD-momentum steps): "
        f"{'on' if optim_jax.cpu_kernels.available() else 'off (not built, or OPTIM_JAX_CPU_KERNELS=0)'}",
    ])


def contention(start_wall: float, start_busy: float, start_own: float) -> str:
    """A report line: the CPU time other processes took since the start of the run."""
    wall = time.perf_counter() - start_wall
    others = busy_cpu_seconds() - start_busy - (own_cpu_seconds() - start_own)
    return (
        f"- other processes used {max(others, 0.0):.1f} CPU-s during this {wall:.0f} s run "
        f"({max(others, 0.0) / wall:.2f} cores on average; near 0 means uncontended timings)"
    )


# -- every algorithm, one many-leaf case ------------------------------------------------------

ALGORITHM_CASE = Case("200 leaves x 200x250", 200, 50_000, 20)
QUICK_ALGORITHM_CASE = Case("10 leaves x 20x50", 10, 1_000, 3)
TINY_ALGORITHM_CASE = Case("1 leaf x 1x50", 1, 50, 1)

# name -> (optim_jax factory name, its kwargs, optax counterpart or None, torch class or None).
# The counterparts are the nearest optax transforms: same algorithm family, not always the same
# defaults or numerics; the table compares step time, not trajectories.
ALL_ALGORITHMS: dict[str, tuple[str, dict, Callable | None, str | None]] = {
    "sgd": ("sgd", {"lr": LR, "momentum": MOMENTUM}, lambda: optax.sgd(LR, momentum=MOMENTUM), "SGD"),
    "adam": ("adam", {"lr": LR}, lambda: optax.adam(LR), "Adam"),
    "adamw": ("adamw", {"lr": LR}, lambda: optax.adamw(LR), "AdamW"),
    "adagrad": ("adagrad", {"lr": LR}, lambda: optax.adagrad(LR), "Adagrad"),
    "adadelta": ("adadelta", {"lr": 1.0}, lambda: optax.adadelta(1.0), "Adadelta"),
    "adamax": ("adamax", {"lr": LR}, lambda: optax.adamax(LR), "Adamax"),
    "asgd": ("asgd", {"lr": LR}, None, "ASGD"),
    "nadam": ("nadam", {"lr": LR}, lambda: optax.nadam(LR), "NAdam"),
    "radam": ("radam", {"lr": LR}, lambda: optax.radam(LR), "RAdam"),
    "rmsprop": ("rmsprop", {"lr": LR}, lambda: optax.rmsprop(LR), "RMSprop"),
    "rprop": ("rprop", {"lr": LR}, lambda: optax.rprop(LR), "Rprop"),
    "adafactor": ("adafactor", {"lr": LR}, lambda: optax.adafactor(LR), "Adafactor"),
    "muon": ("muon", {"lr": LR}, lambda: optax.contrib.muon(LR), "Muon"),
}


def algorithm_report(case: Case) -> str:
    """Median ms of one step of every algorithm on ``case`` (2-d leaves): optim_jax and its optax
    counterpart taking turns, then torch's class with ``foreach=True`` where torch has it."""
    rng = np.random.default_rng(0)
    shape = (case.size // 250, 250) if case.size >= 250 else (1, case.size)
    host_params = [rng.standard_normal(shape, dtype=np.float32) for _ in range(case.leaves)]
    host_grads = [rng.standard_normal(shape, dtype=np.float32) for _ in range(case.leaves)]
    grads = [jnp.array(g) for g in host_grads]
    lines = [
        f"### Every algorithm, {case.name} (float32, {case.repeats} timed steps)",
        "",
        "| algorithm | optim_jax ms | optax ms | x optax | torch foreach ms | x torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (factory, kwargs, counterpart, torch_name) in ALL_ALGORITHMS.items():
        ours = getattr(optim_jax, factory)(**kwargs)
        steps = {"optim_jax": jax_step(ours, optim_jax.apply_updates, [jnp.array(p) for p in host_params], grads)}
        if counterpart is not None:
            steps["optax"] = jax_step(counterpart(), optax.apply_updates, [jnp.array(p) for p in host_params], grads)
        timings = time_interleaved(steps, case.repeats)
        del steps
        release_memory()
        torch_ms = None
        if torch_name is not None:
            params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in host_params]
            for p, g in zip(params, host_grads):
                p.grad = torch.from_numpy(g)
            cls = getattr(torch.optim, torch_name)
            foreach = {"foreach": True} if "foreach" in inspect.signature(cls).parameters else {}
            optimizer = cls(params, **kwargs, **foreach)  # torch's Muon has no foreach
            with torch.no_grad():
                torch_ms = time_steps(optimizer.step, case.repeats).median
        ms = timings["optim_jax"].median
        optax_ms = timings["optax"].median if "optax" in timings else None
        lines.append(
            f"| {name} | {ms:.2f} | {fmt(optax_ms, '.2f')} "
            f"| {fmt(optax_ms and ms / optax_ms, '.2f')} | {fmt(torch_ms, '.2f')} "
            f"| {fmt(torch_ms and ms / torch_ms, '.2f')} |"
        )
        release_memory()
    return "\n".join(lines)


def publish(report: str, body: str, markdown: str | None) -> str:
    """Prints ``body`` (the header was printed first), writes ``report`` to ``markdown`` if
    given, and returns ``report``."""
    print(body)
    if markdown:
        with open(markdown, "w") as f:
            f.write(report)
    return report


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark, prints the report and returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--tiny", action="store_true",
                        help="one tiny case, one timed step: checks that every row is produced "
                             "(the tests' mode; the timings mean nothing)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    parser.add_argument(
        "--first-step", action="store_true",
        help="instead: time to the first step(closure) on 1000 leaves in fresh processes, "
             "with and without the persistent compilation cache",
    )
    parser.add_argument(
        "--algorithms", action="store_true",
        help="instead: one step of every algorithm on one many-leaf case, vs optax and torch",
    )
    args = parser.parse_args(argv)
    global COLLECT_GARBAGE, BETWEEN_STEPS
    COLLECT_GARBAGE = not args.tiny
    BETWEEN_STEPS = Flush(FLUSH_FLOATS["tiny" if args.tiny else "full"])
    threads = cpu_count()
    torch.set_num_threads(threads)
    start = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    print(header(threads), flush=True)
    if args.first_step:
        import first_step  # benchmarks/ is the script's folder, on sys.path

        tables = first_step.report(*((3, 64) if args.tiny else (20, 1000) if args.quick
                                     else (1000, 1000)), fresh=not args.tiny)
    elif args.algorithms:
        tables = algorithm_report(TINY_ALGORITHM_CASE if args.tiny else
                                  QUICK_ALGORITHM_CASE if args.quick else ALGORITHM_CASE)
    else:
        rows = []
        for case in TINY_CASES if args.tiny else QUICK_CASES if args.quick else FULL_CASES:
            rows += run_case(case)
            print(f"  done: {case.name}", flush=True)
        tables = f"{table(rows)}\n\n{summary(rows)}"
    body = f"{contention(*start)}\n\n{tables}"
    report = f"{header(threads)}\n{body}\n"
    return publish(report, body, args.markdown)


if __name__ == "__main__":
    main()
