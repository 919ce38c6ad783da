"""Run by tests/test_multiprocess.py: trains a sharded MLP with the stateful ``Adam`` on a 4x2
mesh of fake CPU devices, either as one process of a ``jax.distributed`` job or alone, and
writes the final (gathered) params and losses to an ``.npz`` file.

Usage: ``multiprocess_worker.py OUT DEVICES [PROCESS_ID NUM_PROCESSES PORT]``
"""

import os
import sys

OUT, DEVICES = sys.argv[1], int(sys.argv[2])
DISTRIBUTED = len(sys.argv) > 3
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optim_jax  # noqa: E402

if DISTRIBUTED:
    process_id, num_processes, port = map(int, sys.argv[3:6])
    # Short timeouts: a peer that never comes up (its port taken, say) fails the run in seconds
    # rather than after jax's five-minute defaults; the test's own timeout is the backstop.
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", coordinator_bind_address=f"127.0.0.1:{port}",
        num_processes=num_processes, process_id=process_id, initialization_timeout=60,
        shutdown_timeout_seconds=20,
    )

STEPS = 5
BATCH, FEATURES, HIDDEN, CLASSES = 64, 16, 32, 8

# jax.devices() lists every process's devices, grouped by process: with 2 processes the first two
# 'data' rows live in process 0 and the last two in process 1, so the batch and the FSDP-sharded
# weights both span the process boundary.
mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
specs = {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", "data"), "b2": P("data")}


def global_array(value: np.ndarray, spec: P) -> jax.Array:
    """``value`` (the same in every process) laid out over the mesh; each process fills only the
    shards on its own devices."""
    return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec),
                                        lambda index: value[index])


rng = np.random.default_rng(0)
init = {
    "w1": rng.standard_normal((FEATURES, HIDDEN), np.float32) / np.sqrt(FEATURES),
    "b1": np.zeros(HIDDEN, np.float32),
    "w2": rng.standard_normal((HIDDEN, CLASSES), np.float32) / np.sqrt(HIDDEN),
    "b2": np.zeros(CLASSES, np.float32),
}
batches = [(rng.standard_normal((BATCH, FEATURES), np.float32),
            rng.integers(0, CLASSES, BATCH).astype(np.int32)) for _ in range(STEPS)]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


opt = optim_jax.Adam({k: global_array(v, specs[k]) for k, v in init.items()}, lr=1e-2)
losses = []
for x, y in batches:
    losses.append(opt.step(loss_fn, global_array(x, P("data")), global_array(y, P("data"))))



def laid_out(array: jax.Array, spec: P) -> bool:
    return array.sharding.is_equivalent_to(NamedSharding(mesh, spec), array.ndim)


# Every process checks its own view; a sharding lost in one process only would show here.
keeps_sharding = all(
    laid_out(opt.params[k], spec) and laid_out(opt.state[opt.params[k]]["exp_avg"], spec)
    and laid_out(opt.state[opt.params[k]]["exp_avg_sq"], spec)
    and laid_out(opt.state[opt.params[k]]["step"], P())
    for k, spec in specs.items())
gathered = multihost_utils.process_allgather(
    {"params": opt.params, "exp_avg_sq": opt.state[opt.params["w1"]]["exp_avg_sq"],
     "loss": jnp.stack(losses)}, tiled=True)
per_process = multihost_utils.process_allgather(np.array(keeps_sharding))
if jax.process_index() == 0:
    np.savez(OUT, **{f"param_{k}": v for k, v in gathered["params"].items()},
             exp_avg_sq_w1=gathered["exp_avg_sq"], loss=gathered["loss"],
             keeps_sharding=per_process, processes=jax.process_count(),
             devices=jax.device_count())
