"""Run by tests/test_sharding.py in a subprocess with 8 fake CPU devices; prints JSON findings."""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optim_jax as optim  # noqa: E402

ELEMENTWISE = ["sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
               "rmsprop", "rprop"]
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")

mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
specs = {"w": P("data", "model"), "b": P("model")}
params = {
    "w": jax.device_put(jnp.ones((16, 8)), NamedSharding(mesh, specs["w"])),
    "b": jax.device_put(jnp.zeros(8), NamedSharding(mesh, specs["b"])),
}


def same_sharding(tree_a, tree_b):
    """Whether every array leaf of ``tree_a`` (scalar counters aside) has ``tree_b``'s sharding.

    Scalar counters such as ``step`` are left out: ``init`` makes them on one device and the
    jitted update returns them replicated (a known gap, see the README's many-devices section).
    """
    return all(a.sharding.is_equivalent_to(b.sharding, a.ndim)
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)) if a.ndim)


def param_shaped_leaves_follow_params(state):
    by_shape = {p.shape: p for p in jax.tree.leaves(params)}
    return all(leaf.sharding.is_equivalent_to(by_shape[leaf.shape].sharding, leaf.ndim)
               for leaf in jax.tree.leaves(state) if leaf.shape in by_shape)


results = {}
grads = jax.tree.map(lambda p: jax.device_put(jnp.full(p.shape, 0.1), p.sharding), params)
for name in ELEMENTWISE:
    tx = getattr(optim, name)(momentum=0.9) if name == "sgd" else getattr(optim, name)()
    state = tx.init(params)

    @jax.jit
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optim.apply_updates(p, updates), s

    hlo = step.lower(params, state, grads).compile().as_text()
    new_params, new_state = step(params, state, grads)
    results[name] = {
        "state_follows_params": param_shaped_leaves_follow_params(state),
        "collectives": [c for c in COLLECTIVES if c in hlo],
        "params_keep_sharding": same_sharding(new_params, params),
        "state_keeps_sharding": same_sharding(new_state, state),
    }

opt = optim.Adam(params, lr=1e-3)
for _ in range(3):
    opt.step(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"]))
results["stateful"] = {
    "params_keep_sharding": all(
        opt.params[k].sharding.is_equivalent_to(NamedSharding(mesh, s), opt.params[k].ndim)
        for k, s in specs.items()),
    "state_follows_params": opt.state[1]["exp_avg"].sharding.is_equivalent_to(
        NamedSharding(mesh, specs["w"]), 2),
}
print(json.dumps(results))
