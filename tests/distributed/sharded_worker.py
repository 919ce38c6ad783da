"""Run by test_sharding.py in a subprocess with 8 fake CPU devices; prints JSON findings."""

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
replicated = NamedSharding(mesh, P())
specs = {"w": P("data", "model"), "b": P("model")}
params = {
    "w": jax.device_put(jnp.ones((16, 8)), NamedSharding(mesh, specs["w"])),
    "b": jax.device_put(jnp.zeros(8), NamedSharding(mesh, specs["b"])),
}


def same_sharding(tree_a, tree_b):
    """Whether every array leaf of ``tree_a`` has ``tree_b``'s sharding."""
    return all(a.sharding.is_equivalent_to(b.sharding, a.ndim)
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def state_follows_params(state):
    """Param-shaped leaves have their param's sharding; every other leaf is replicated."""
    by_shape = {p.shape: p.sharding for p in jax.tree.leaves(params)}
    return all(leaf.sharding.is_equivalent_to(by_shape.get(leaf.shape, replicated), leaf.ndim)
               for leaf in jax.tree.leaves(state))


def collectives(hlo):
    return sorted(c for c in COLLECTIVES if c in hlo)


def state_bytes_per_device(tree):
    """Bytes of ``tree`` on each device (the largest, should they differ)."""
    per_device = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values())


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
        "state_follows_params": state_follows_params(state),
        "collectives": collectives(hlo),
        "params_keep_sharding": same_sharding(new_params, params),
        "state_keeps_sharding": same_sharding(new_state, state),
    }



def loss(p):
    return jnp.sum(p["w"] ** 2) + jnp.sum(jnp.sin(p["b"]))


def stateful_findings(opt, expected_params, expected_state):
    """Shardings of a stateful optimizer's params and state after steps and a state_dict trip."""
    found = {}
    for _ in range(3):
        opt.step(loss)
    found["params_keep_sharding"] = same_sharding(opt.params, expected_params)
    found["state_keeps_sharding"] = same_sharding(opt._states(), expected_state)
    saved = jax.tree.map(np.asarray, opt.state_dict())  # host copies, as a checkpoint holds
    opt.load_state_dict(saved)
    found["state_sharding_survives_load"] = same_sharding(opt._states(), expected_state)
    opt.step(loss)
    found["state_keeps_sharding_after_load"] = same_sharding(opt._states(), expected_state)
    return found


results["stateful"] = stateful_findings(
    optim.Adam(jax.tree.map(jnp.copy, params), lr=1e-3), params, optim.adam(1e-3).init(params))

# A closure's matmuls would let XLA move a weight's sharding in the step's outputs (here the
# last layer's, to P('data', 'model')); a group kept as a tree keeps every leaf's.
mlp_rng = np.random.default_rng(1)
small_mlp = {}
for layer in range(3):
    small_mlp[f"w{layer}"] = jax.device_put(
        jnp.asarray(mlp_rng.normal(size=(16, 16)) * 0.3, jnp.float32), NamedSharding(mesh, P("data")))
    small_mlp[f"b{layer}"] = jax.device_put(jnp.zeros(16), NamedSharding(mesh, P("model")))


def mlp_loss(p, x):
    for layer in range(3):
        x = jax.nn.relu(x @ p[f"w{layer}"] + p[f"b{layer}"])
    return x.sum()


mlp_opt = optim.Adam(jax.tree.map(jnp.copy, small_mlp), lr=0.01)
for _ in range(3):
    mlp_opt.step(mlp_loss, jnp.ones((8, 16)))
results["closure_keeps_shardings"] = {
    "params": same_sharding(mlp_opt.params, small_mlp),
    "state": same_sharding(mlp_opt._states()[0][0].exp_avg, small_mlp),
}

# A group of many sharded leaves keeps contiguous buffers, one per dtype and set of mesh axes,
# each device holding its own shards: compared with the same optimizer keeping the tree.
packed_specs = [P("data", "model"), P("model"), P(), P(None, "model"), P(("data", "model")),
                P("data"), P("data", "model"), P(), P("model", "data"), P("data")]
packed_shapes = [(16, 8), (8,), (3,), (5, 4), (32,), (8, 3), (400, 64), (7, 2), (8, 8), (12,)]
packed_dtypes = [jnp.float32] * 9 + [jnp.bfloat16]
packed_rng = np.random.default_rng(0)
packed_params = {
    f"p{i}": jax.device_put(jnp.asarray(packed_rng.normal(size=shape), dtype),
                            NamedSharding(mesh, spec))
    for i, (shape, spec, dtype) in enumerate(zip(packed_shapes, packed_specs, packed_dtypes))}
packed_grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, packed_params)


def packed_loss(p):
    return sum(jnp.sum(jnp.sin(v.astype(jnp.float32)) * (i + 1))
               for i, v in enumerate(jax.tree.leaves(p)))


def compiled_hlo(opt, kind, *args):
    """The text of the optimizer's compiled program whose key starts with ``kind``."""
    program = next(prog for key, prog in opt._compiled._programs.items() if key.key[0] == kind)
    return program.lower(opt._held(), opt._states(), opt._prepare()[1], *args).compile().as_text()


class TreeKeptAdamW(optim.AdamW):
    contiguous = False


other_mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("x", "y"))
two_meshes = dict(packed_params, odd=jax.device_put(jnp.ones((6, 4)),
                                                    NamedSharding(other_mesh, P(None, "y"))))


def max_scaled_difference(tree_a, tree_b):
    """The largest difference of two trees' leaves, in roundings of each leaf's largest value
    (its dtype's eps times it): a rounding shows near zero as well as anywhere (relative to
    each element, a param at 6e-6 that differs by one float32 rounding of 2e-7 reads as
    4e-2, which says nothing of the step)."""
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                     / (np.max(np.abs(np.asarray(b, np.float64))) * float(jnp.finfo(b.dtype).eps)))
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def same_values(tree_a, tree_b):
    return all(np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


packed, tree_kept = (cls(jax.tree.map(jnp.copy, packed_params), lr=1e-2, weight_decay=0.1)
                     for cls in (optim.AdamW, TreeKeptAdamW))
for opt in (packed, tree_kept):
    for _ in range(3):
        opt.grad = packed_grads
        opt.step()
packed_record = packed._records[0]
found = {
    "buffers": sorted([key, str(buffer.sharding.spec)]
                      for key, buffer in packed_record.buffers.items()),
    # The update over buffers is the tree's arithmetic, element for element.
    "same_after_given_gradients": same_values(packed.params, tree_kept.params)
    and same_values(packed.state_dict(), tree_kept.state_dict()),
    "collectives": collectives(compiled_hlo(packed, "apply", packed._grad)),
    "params_keep_sharding": same_sharding(packed.params, packed_params),
    "state_like_tree_kept": same_sharding(packed._leaf_states(), tree_kept._states()),
    "bytes_per_device": [state_bytes_per_device(packed_record.buffers),
                         state_bytes_per_device(packed_record.state)],
    "tree_bytes_per_device": [state_bytes_per_device(tree_kept.params),
                              state_bytes_per_device(tree_kept._states())],
}
for opt in (packed, tree_kept):
    opt.step(packed_loss)
    opt.load_state_dict(jax.tree.map(np.asarray, opt.state_dict()))
    opt.step(packed_loss)
# The loss's gradient is differentiated through the shards' views, a program XLA fuses (and
# so rounds) a little differently from the tree's.
found["after_closures"] = max_scaled_difference(packed.params, tree_kept.params)
found["two_meshes_keep_tree"] = optim.AdamW(two_meshes)._records[0].packing is None
results["packed"] = found

# Math that needs reductions: only all-reduces of scalars appear.
clipped = optim.chain(optim.clip_grad_norm(1.0), optim.sgd(0.1))
hlo = jax.jit(clipped.update).lower(grads, clipped.init(params), params).compile().as_text()
results["clip_grad_norm"] = collectives(hlo)
lbfgs = optim.lbfgs(line_search_fn="strong_wolfe")
lbfgs_state = lbfgs.init(params)
lbfgs_update = jax.jit(lambda g, s, p: lbfgs.update(g, s, p, value=loss(p), value_fn=loss))
hlo = lbfgs_update.lower(grads, lbfgs_state, params).compile().as_text()
updates, new_state = lbfgs_update(grads, lbfgs_state, params)
history_shardings = jax.tree.map(
    lambda p: NamedSharding(mesh, P(None, *p.sharding.spec)), params)
results["lbfgs"] = {
    "collectives": collectives(hlo),
    "state_follows_params": all(
        same_sharding(field, params)
        for field in (lbfgs_state.d, lbfgs_state.prev_flat_grad, new_state.d,
                      new_state.prev_flat_grad)
    ) and all(
        leaf.sharding.is_equivalent_to(spec, leaf.ndim)
        for buffers in (lbfgs_state.old_dirs, lbfgs_state.old_stps, new_state.old_dirs,
                        new_state.old_stps)
        for leaf, spec in zip(jax.tree.leaves(buffers), jax.tree.leaves(history_shardings))
    ),
    "rest_replicated": all(
        leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
        for state in (lbfgs_state, new_state)
        for leaf in (state.t, state.ro, state.num_old, state.head, state.H_diag,
                     state.prev_loss, state.n_iter, state.func_evals, state.nonfinite)
    ),
    "updates_keep_sharding": same_sharding(updates, params),
}
lbfgs_options = dict(max_iter=3, history_size=4, line_search_fn="strong_wolfe")
results["lbfgs_stateful"] = stateful_findings(
    optim.LBFGS(jax.tree.map(jnp.copy, params), **lbfgs_options), params,
    optim.lbfgs(**lbfgs_options).init(params))

# ZeRO-1: params replicated over a pure data-parallel mesh, state split along it.
flat_mesh = Mesh(np.array(jax.devices()), ("data",))
everywhere = NamedSharding(flat_mesh, P())
mlp = {f"w{i}": jax.device_put(jnp.full((256, 256), 0.01 * (i + 1)), everywhere) for i in range(3)}
mlp["bias"] = jax.device_put(jnp.zeros(10), everywhere)
mlp_grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, mlp)
zero = optim.zero_redundancy(optim.adam(1e-3), flat_mesh, axis="data")
runs = {}
for label, tx in (("replicated", optim.adam(1e-3)), ("zero1", zero)):
    state = tx.init(mlp)

    @jax.jit
    def step(p, s, g, tx=tx):
        updates, s = tx.update(g, s, p)
        return optim.apply_updates(p, updates), s

    hlo = step.lower(mlp, state, mlp_grads).compile().as_text()
    p, s = mlp, state
    for _ in range(3):
        p, s = step(p, s, mlp_grads)
    runs[label] = {
        "state_bytes_per_device": state_bytes_per_device(state),
        "params_bytes_per_device": state_bytes_per_device(mlp),
        "collectives": collectives(hlo),
        "params_stay_replicated": same_sharding(p, mlp),
        "state_keeps_layout": same_sharding(s, state),
        "params": {k: np.asarray(v).tolist()[:2] for k, v in p.items() if k != "bias"},
    }
results["zero1"] = {
    **{k: {f: v for f, v in r.items() if f != "params"} for k, r in runs.items()},
    "same_params": runs["zero1"]["params"] == runs["replicated"]["params"],
}
zero_opt = optim.ZeroRedundancyOptimizer(jax.tree.map(jnp.copy, mlp), optim.Adam, lr=1e-3)
zero_state_bytes = state_bytes_per_device(zero_opt._states())
for _ in range(2):
    zero_opt.step(lambda p: sum(jnp.sum(jnp.sin(w)) for w in p.values()))
results["zero1_stateful"] = {
    "is_adam": isinstance(zero_opt, optim.Adam),
    "state_bytes_per_device": zero_state_bytes,
    "after_steps": state_bytes_per_device(zero_opt._states()),
    "params_stay_replicated": same_sharding(zero_opt.params, mlp),
}
try:
    optim.zero_redundancy(optim.adam(1e-3), mesh, axis="data").init(params)
except ValueError as error:
    results["zero1_sharded_params"] = str(error)
print(json.dumps(results))
