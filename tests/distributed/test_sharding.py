"""Sharded params across 8 (fake CPU) devices: optimizer state takes each parameter's sharding
(scalars replicated), updates keep it, elementwise algorithms compile to no collectives, the
stateful class keeps shardings across donated steps and state_dict round trips, and ZeRO-1
splits the state of replicated params. Runs in a subprocess: the device count must be set before
JAX starts."""

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import early


def worker_run(folder: str) -> tuple[list[str], dict]:
    return [sys.executable, str(Path(__file__).with_name("sharded_worker.py"))], dict(os.environ)


EARLY = {"sharded_worker": worker_run}  # ~25 s: it runs beside the rest of the suite


@pytest.fixture(scope="module")
def findings():
    out = early.succeeded("sharded_worker", worker_run)
    return json.loads(out.stdout.strip().splitlines()[-1])


ELEMENTWISE = ["sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
               "rmsprop", "rprop"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_update_keeps_shardings_and_adds_no_collectives(findings, name):
    assert findings[name] == {
        "state_follows_params": True,
        "collectives": [],
        "params_keep_sharding": True,
        "state_keeps_sharding": True,
    }


def test_stateful_optimizer_keeps_shardings_across_steps_and_state_dict(findings):
    assert findings["stateful"] == {
        "params_keep_sharding": True,
        "state_keeps_sharding": True,
        "state_sharding_survives_load": True,
        "state_keeps_sharding_after_load": True,
    }


def test_global_norm_clipping_adds_only_its_reduction(findings):
    assert findings["clip_grad_norm"] == ["all-reduce"]


def test_lbfgs_on_sharded_params(findings):
    # The vectors are pytrees laid out like the params: only reductions communicate (the dot
    # products and norms, and the objective's own sums), as all-reduces; nothing is gathered.
    assert findings["lbfgs"] == {
        "collectives": ["all-reduce"],
        "state_follows_params": True,
        "rest_replicated": True,
        "updates_keep_sharding": True,
    }
    assert findings["lbfgs_stateful"] == {
        "params_keep_sharding": True,
        "state_keeps_sharding": True,
        "state_sharding_survives_load": True,
        "state_keeps_sharding_after_load": True,
    }


def test_zero1_shards_state_one_eighth_per_device_with_identical_updates(findings):
    plain, zero = findings["zero1"]["replicated"], findings["zero1"]["zero1"]
    assert plain["params_bytes_per_device"] == zero["params_bytes_per_device"] == 786472
    # Adam's two moments: twice the params; then 1/8 of it on each of 8 devices (the 10-long
    # bias does not split 8 ways and stays replicated, as do the step counters).
    assert plain["state_bytes_per_device"] == 2 * 786472 + 4
    assert zero["state_bytes_per_device"] == 2 * (3 * 256 * 256 * 4 // 8 + 40) + 4
    assert plain["collectives"] == [] and zero["collectives"] == ["all-gather"]
    assert zero["params_stay_replicated"] and zero["state_keeps_layout"]
    assert findings["zero1"]["same_params"]
    assert findings["zero1_stateful"] == {
        "is_adam": True, "state_bytes_per_device": zero["state_bytes_per_device"],
        "after_steps": zero["state_bytes_per_device"], "params_stay_replicated": True}


def test_zero_redundancy_names_a_missing_axis_and_needs_a_mesh():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    import optim_jax as optim

    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match=r"axis 'data' is not an axis of the mesh.*'batch'"):
        optim.zero_redundancy(optim.adam(1e-3), mesh, axis="data")
    with pytest.raises(ValueError, match="needs params laid out over a mesh"):
        optim.ZeroRedundancyOptimizer({"w": jnp.zeros(4)}, optim.Adam, lr=1e-3)


def test_zero_redundancy_refuses_what_it_cannot_shard():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import optim_jax as optim

    explicit = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    with pytest.raises(ValueError, match="needs a mesh with Auto axes"):
        optim.zero_redundancy(optim.adam(1e-3), explicit)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jax.device_put(jnp.ones((4, 2)), NamedSharding(mesh, P()))}
    with pytest.raises(TypeError, match="does not take LBFGS"):
        optim.ZeroRedundancyOptimizer(params, optim.LBFGS)


def test_zero_redundancy_refuses_sharded_params(findings):
    assert findings["zero1_sharded_params"].startswith("param ['b'] is sharded")


def test_many_sharded_leaves_share_buffers_per_dtype_and_mesh_axes(findings):
    packed = findings["packed"]
    # Ten leaves, six buffers: P('data', 'model') and P(('data', 'model')) shard over the same
    # axes and share one; P(None, 'model') and P('model') share another; replicated leaves one.
    assert packed["buffers"] == [
        ["bfloat16@data", "P('data',)"], ["float32@", "P()"], ["float32@data", "P('data',)"],
        ["float32@data/model", "P(('data', 'model'),)"], ["float32@model", "P('model',)"],
        ["float32@model/data", "P(('model', 'data'),)"]]
    assert packed["same_after_given_gradients"]
    assert packed["collectives"] == []
    assert packed["params_keep_sharding"] and packed["state_like_tree_kept"]
    assert packed["bytes_per_device"] == packed["tree_bytes_per_device"] == [13066, 26136]
    assert packed["after_closures"] < 8  # roundings of the leaf's scale (measured: 0.5)
    assert packed["two_meshes_keep_tree"]


def test_a_closures_matmuls_do_not_move_the_params_shardings(findings):
    assert findings["closure_keeps_shardings"] == {"params": True, "state": True}
