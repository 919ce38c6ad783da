"""Run by test_multiprocess.py: trains a sharded MLP with the stateful ``Adam`` on a 4x2
mesh of fake CPU devices, either as one process of a ``jax.distributed`` job or alone, and
writes the final (gathered) params and losses to an ``.npz`` file.

Usage: ``multiprocess_worker.py OUT DEVICES [PROCESS_ID NUM_PROCESSES PORT]``

checkpoint_worker.py imports the MLP problem from here.
"""

import os
import sys

if __name__ == "__main__":  # the device count must be set before JAX starts
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[2]}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optim_jax  # noqa: E402

FEATURES, HIDDEN, CLASSES = 16, 32, 8
# Layouts over a ('data', 'model') mesh: FSDP along 'data', tensor-parallel along 'model'.
SPECS = {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", "data"), "b2": P("data")}

Batch = tuple[np.ndarray, np.ndarray]


def mlp_problem(steps: int, batch_size: int) -> tuple[dict[str, np.ndarray], list[Batch]]:
    """Initial MLP params and ``steps`` batches of (inputs, labels), the same on every call."""
    rng = np.random.default_rng(0)
    init = {
        "w1": rng.standard_normal((FEATURES, HIDDEN), np.float32) / np.sqrt(FEATURES),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": rng.standard_normal((HIDDEN, CLASSES), np.float32) / np.sqrt(HIDDEN),
        "b2": np.zeros(CLASSES, np.float32),
    }
    batches = [(rng.standard_normal((batch_size, FEATURES), np.float32),
                rng.integers(0, CLASSES, batch_size).astype(np.int32)) for _ in range(steps)]
    return init, batches


def mlp_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def main(out: str, process_id: int | None = None, num_processes: int = 1,
         port: int | None = None) -> None:
    """Trains and, in process 0, writes the results; as one process of a ``jax.distributed``
    job on 127.0.0.1 when ``process_id`` is given."""
    if process_id is not None:
        # Short timeouts: a peer that never comes up (its port taken, say) fails the run in
        # seconds rather than after jax's five-minute defaults; the test's timeout is the backstop.
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}", coordinator_bind_address=f"127.0.0.1:{port}",
            num_processes=num_processes, process_id=process_id, initialization_timeout=60,
            shutdown_timeout_seconds=20,
        )
    # jax.devices() lists every process's devices, grouped by process: with 2 processes the
    # first two 'data' rows live in process 0 and the last two in process 1, so the batch and the
    # FSDP-sharded weights both span the process boundary.
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))

    def global_array(value: np.ndarray, spec: P) -> jax.Array:
        """``value`` (the same in every process) over the mesh; each process fills only the
        shards on its own devices."""
        return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec),
                                            lambda index: value[index])

    def laid_out(array: jax.Array, spec: P) -> bool:
        return array.sharding.is_equivalent_to(NamedSharding(mesh, spec), array.ndim)

    init, batches = mlp_problem(steps=5, batch_size=64)
    opt = optim_jax.Adam({k: global_array(v, SPECS[k]) for k, v in init.items()}, lr=1e-2)
    losses = []
    for step, (x, y) in enumerate(batches):
        if step == 2:
            # A state_dict round trip mid-run: its copies and checks must work on arrays that
            # span processes, and leave training as it was.
            opt.load_state_dict(opt.state_dict())
        losses.append(opt.step(mlp_loss, global_array(x, P("data")), global_array(y, P("data"))))

    # Every process checks its own view; a sharding lost in one process only would show here.
    keeps_sharding = all(
        laid_out(opt.params[k], spec) and laid_out(opt.state[opt.params[k]]["exp_avg"], spec)
        and laid_out(opt.state[opt.params[k]]["exp_avg_sq"], spec)
        and laid_out(opt.state[opt.params[k]]["step"], P())
        for k, spec in SPECS.items())
    gathered = multihost_utils.process_allgather(
        {"params": opt.params, "exp_avg_sq": opt.state[opt.params["w1"]]["exp_avg_sq"],
         "loss": jnp.stack(losses)}, tiled=True)
    per_process = multihost_utils.process_allgather(np.array(keeps_sharding))
    if jax.process_index() == 0:
        np.savez(out, **{f"param_{k}": v for k, v in gathered["params"].items()},
                 exp_avg_sq_w1=gathered["exp_avg_sq"], loss=gathered["loss"],
                 keeps_sharding=per_process, processes=jax.process_count(),
                 devices=jax.device_count())


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[3:6]))
