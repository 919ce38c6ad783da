"""Run by test_sharded_checkpoint.py with 8 fake CPU devices; prints JSON findings.

Trains an MLP a few steps on a 4x2 ('data', 'model') mesh with both faces, saves params and
optimizer state with orbax, restores them onto an 8x1 layout of the same axes and trains on,
next to the same training continued on 4x2 without the round trip.

Usage: ``checkpoint_worker.py CHECKPOINT_DIR``
"""

import json
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from multiprocess_worker import SPECS, mlp_loss, mlp_problem  # noqa: E402

import optim_jax  # noqa: E402

CHECKPOINTS = Path(sys.argv[1])
BEFORE, AFTER = 3, 3  # steps before the checkpoint, and after it

devices = np.array(jax.devices())
saved_mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
new_mesh = Mesh(devices.reshape(8, 1), ("data", "model"))
init, batches = mlp_problem(steps=BEFORE + AFTER, batch_size=32)


def laid_out(mesh: Mesh) -> dict[str, jax.Array]:
    return {k: jax.device_put(v, NamedSharding(mesh, SPECS[k])) for k, v in init.items()}


def batch(step: int, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    return jax.device_put(batches[step], NamedSharding(mesh, P()))


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    # Every device runs the math on the gathered weights and the whole batch; only the storage of
    # params and state is sharded. XLA splits a sharded matmul or batch mean into partial sums
    # that depend on the mesh shape, so no continuation on another layout could match bit for bit.
    return mlp_loss(jax.lax.with_sharding_constraint(params, P()), x, y)


def on_mesh(tree: object, mesh: Mesh) -> bool:
    """Whether every array of ``tree`` is laid out over ``mesh`` (not merely the same devices)."""
    return all(isinstance(a.sharding, NamedSharding) and a.sharding.mesh == mesh
               for a in jax.tree.leaves(tree))


def same_layout(tree: object, reference: object) -> bool:
    return all(a.sharding.is_equivalent_to(b.sharding, a.ndim)
               for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True))


def differing(tree: object, reference: object) -> list[str]:
    """Paths of the leaves of ``tree`` that are not bit-identical to ``reference``'s."""
    paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(tree)[0])
    return [jax.tree_util.keystr(path)
            for path, a, b in zip(paths, leaves, jax.tree.leaves(reference), strict=True)
            if not np.array_equal(np.asarray(a), np.asarray(b))]


checkpointer = ocp.StandardCheckpointer()
findings = {}

# -- the pure face: params and the transform's state pytree ------------------------------------
tx = optim_jax.adam(lr=1e-2)


@jax.jit
def train_step(params: dict, state: object, x: jax.Array, y: jax.Array) -> tuple[dict, object]:
    updates, state = tx.update(jax.grad(loss_fn)(params, x, y), state, params)
    return optim_jax.apply_updates(params, updates), state


def train(tree: dict, mesh: Mesh, steps: range) -> dict:
    params, state = tree["params"], tree["opt_state"]
    with jax.set_mesh(mesh):
        for step in steps:
            params, state = train_step(params, state, *batch(step, mesh))
    return {"params": params, "opt_state": state}


params = laid_out(saved_mesh)
saved = train({"params": params, "opt_state": tx.init(params)}, saved_mesh, range(BEFORE))
checkpointer.save(CHECKPOINTS / "pure", saved)
checkpointer.wait_until_finished()
target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
    a.shape, a.dtype, sharding=NamedSharding(new_mesh, a.sharding.spec)), saved)
restored = checkpointer.restore(CHECKPOINTS / "pure", target)
resumed = train(restored, new_mesh, range(BEFORE, BEFORE + AFTER))
uninterrupted = train(saved, saved_mesh, range(BEFORE, BEFORE + AFTER))
findings["pure"] = {
    "restored_on_new_mesh": on_mesh(restored, new_mesh),
    "restored_as_asked": same_layout(restored, target),
    "restored_values_differ_at": differing(restored, saved),
    "resumed_on_new_mesh": on_mesh(resumed, new_mesh),
    "resumed_differs_at": differing(resumed, uninterrupted),
}

# -- the stateful face: opt.params and opt.state_dict() --------------------------------------
SCHEDULED_LR = 5e-3  # set before saving, as a scheduler would: the checkpoint must carry it


def train_stateful(opt: optim_jax.Adam, mesh: Mesh, steps: range) -> None:
    with jax.set_mesh(mesh):
        for step in steps:
            opt.step(loss_fn, *batch(step, mesh))


opt = optim_jax.Adam(laid_out(saved_mesh), lr=1e-2)
train_stateful(opt, saved_mesh, range(BEFORE))
opt.param_groups[0]["lr"] = SCHEDULED_LR
# The state_dict holds strings (param_names): orbax's PyTree handler saves them, Standard's not.
stateful_checkpointer = ocp.PyTreeCheckpointer()
stateful_checkpointer.save(CHECKPOINTS / "stateful", {"params": opt.params, "optimizer": opt.state_dict()})
train_stateful(opt, saved_mesh, range(BEFORE, BEFORE + AFTER))

# A new job: an optimizer over params laid out on the new mesh is the restore target, so the
# checkpoint comes back in that layout; the values it was built with are all replaced.
template = optim_jax.Adam(laid_out(new_mesh), lr=1e-2)
target = {"params": template.params, "optimizer": template.state_dict()}
restored = stateful_checkpointer.restore(
    CHECKPOINTS / "stateful", item=target,
    restore_args=ocp.checkpoint_utils.construct_restore_args(target))
resumed = optim_jax.Adam(restored["params"], lr=1e-2)
resumed.load_state_dict(restored["optimizer"])
loaded_on_new_mesh = on_mesh(resumed.state_dict()["state"], new_mesh)
train_stateful(resumed, new_mesh, range(BEFORE, BEFORE + AFTER))
findings["stateful"] = {
    "restored_on_new_mesh": on_mesh((restored["params"], restored["optimizer"]["state"]),
                                    new_mesh),
    "loaded_state_on_new_mesh": loaded_on_new_mesh,
    "lr": resumed.param_groups[0]["lr"],
    "resumed_on_new_mesh": on_mesh((resumed.params, resumed.state_dict()["state"]), new_mesh),
    "resumed_differs_at": differing(
        (resumed.params, resumed.state_dict()["state"]), (opt.params, opt.state_dict()["state"])),
}

# -- restoring without a target: orbax brings the arrays back in the layout they were saved in,
# and load_state_dict is left to put the state where the params are, as torch's moves loaded
# state to its parameter's device.
as_saved = stateful_checkpointer.restore(CHECKPOINTS / "stateful")
resumed = optim_jax.Adam(restored["params"], lr=1e-2)
findings["saved_layout"] = {"restored_on_saved_mesh": on_mesh(
    (as_saved["params"], as_saved["optimizer"]["state"]), saved_mesh)}
try:
    resumed.load_state_dict(as_saved["optimizer"])
    findings["saved_layout"]["loaded_state_on_new_mesh"] = on_mesh(
        resumed.state_dict()["state"], new_mesh)
    train_stateful(resumed, new_mesh, range(BEFORE, BEFORE + AFTER))
    findings["saved_layout"]["resumed_differs_at"] = differing(
        (resumed.params, resumed.state_dict()["state"]), (opt.params, opt.state_dict()["state"]))
except Exception as error:  # noqa: BLE001 - reported as a finding, so the other findings stand
    findings["saved_layout"]["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"

print(json.dumps(findings))
