"""Time to the first step, in fresh processes: what a user waits for at every start.

Each row runs in its own Python process (nothing compiled before it) on one tree of ``leaves``
float32 leaves of ``size`` elements and the loss ``sum((p - t)**2)`` over them; it reports the
wall time from the first call until its result is ready, compile included:

* ``jax.grad of the loss alone``: ``jax.jit(jax.grad(loss))`` (the floor any optimizer adds to);
* ``jax.value_and_grad of the loss alone``: the same returning the loss too, as
  ``step(closure)`` does (XLA then computes each leaf's term of the loss in kernels of its own);
* ``optax, hand-jitted grad + update``: one ``jax.jit`` of the gradient and ``optax.adam`` over
  the tree, leaf by leaf;
* ``optim_jax.Adam.step(closure)``: the class, its groups in contiguous buffers;
* the same with the group kept as a tree (``contiguous = False``): the per-leaf program;
* the class again in a process restarted over JAX's persistent compilation cache
  (``JAX_COMPILATION_CACHE_DIR``), filled by a first process; and ``jax.value_and_grad`` of
  the loss alone restarted the same way (tracing the loss and loading its program: the least
  a restarted step that returns the loss waits for).

Run as ``python benchmarks/bench_step.py --first-step``; a row's process is this module's
``python benchmarks/first_step.py KIND LEAVES SIZE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

KINDS = {
    "grad": "jax.grad of the loss alone",
    "value-and-grad": "jax.value_and_grad of the loss alone (what step(closure) returns)",
    "optax": "optax, hand-jitted grad + update",
    "class": "optim_jax.Adam.step(closure), contiguous buffers",
    "class-tree": "optim_jax.Adam.step(closure), group kept as a tree",
}
CACHED = "optim_jax.Adam.step(closure), restarted over the persistent cache"
# The floor of a restarted step(closure): the loss and its gradient alone, over the same cache.
CACHED_FLOOR = "jax.value_and_grad of the loss alone, restarted over the persistent cache"


def first_step(kind: str, leaves: int, size: int) -> float:
    """Seconds from the first call of ``kind``'s step until its result is ready."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import optim_jax

    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(size, dtype=np.float32)) for _ in range(leaves)]
    targets = [jnp.asarray(rng.standard_normal(size, dtype=np.float32)) for _ in range(leaves)]

    def loss(p, t):
        return sum(jnp.sum((x - y) ** 2) for x, y in zip(p, t))

    start = time.perf_counter()
    if kind == "grad":
        jax.block_until_ready(jax.jit(jax.grad(loss))(params, targets))
    elif kind == "value-and-grad":
        jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(params, targets))
    elif kind == "optax":
        tx = optax.adam(1e-3)

        @jax.jit
        def step(p, s, t):
            updates, s = tx.update(jax.grad(loss)(p, t), s, p)
            return optax.apply_updates(p, updates), s

        jax.block_until_ready(step(params, tx.init(params), targets))
    else:
        cls = optim_jax.Adam if kind == "class" else type(
            "TreeKeptAdam", (optim_jax.Adam,), {"contiguous": False})
        jax.block_until_ready(cls(params, lr=1e-3).step(loss, targets))
    return time.perf_counter() - start


def run_fresh(kind: str, leaves: int, size: int, env: dict | None = None) -> float:
    """:func:`first_step` in a new Python process."""
    out = subprocess.run(
        [sys.executable, __file__, kind, str(leaves), str(size)], capture_output=True,
        text=True, check=True, env={**os.environ, **(env or {})},
    )
    return float(out.stdout.strip().splitlines()[-1])


def report(leaves: int, size: int, fresh: bool = True) -> str:
    """A markdown table of every row's first-step seconds, and each over the gradient's;
    ``fresh=False`` runs every row in this process (the tests' check that each row is made;
    its timings mean nothing)."""
    run = run_fresh if fresh else lambda kind, leaves, size, env=None: first_step(
        kind, leaves, size)
    seconds = {label: run(kind, leaves, size) for kind, label in KINDS.items()}
    with tempfile.TemporaryDirectory() as cache:
        env = {"JAX_COMPILATION_CACHE_DIR": cache,
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        for kind, label in (("class", CACHED), ("value-and-grad", CACHED_FLOOR)):
            run(kind, leaves, size, env)  # fills the cache
            seconds[label] = run(kind, leaves, size, env)
    floor = seconds[KINDS["grad"]]
    lines = [f"first step on {leaves} leaves x {size} (fresh processes)", "",
             "| what | seconds | x grad alone |", "|---|---:|---:|"]
    lines += [f"| {label} | {s:.2f} | {s / floor:.2f} |" for label, s in seconds.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(first_step(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
