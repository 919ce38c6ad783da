"""The pure protocol: chain, partition, inject_hyperparams, identity, apply_updates, optax
interoperability in both directions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim_jax as optim
from helpers.trees import like_tree, random_tree


def run(tx, params, grads_per_step, apply=optim.apply_updates):
    state = tx.init(params)
    for grads in grads_per_step:
        updates, state = tx.update(grads, state, params)
        params = apply(params, updates)
    return params, state


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    params = jax.tree.map(jnp.asarray, random_tree(rng))
    grads = [jax.tree.map(jnp.asarray, like_tree(rng, params)) for _ in range(5)]
    return params, grads


def test_identity_returns_updates_unchanged(problem):
    params, grads = problem
    updates, state = optim.identity().update(grads[0], optim.identity().init(params))
    chex.assert_trees_all_equal(updates, grads[0])
    assert state == optim.EmptyState()


def test_chain_equals_sequential_application(problem):
    params, grads = problem
    chained, _ = run(optim.chain(optim.add_decayed_weights(0.1), optim.sgd(lr=0.1)), params, grads)
    expected = params
    for g in grads:
        expected = jax.tree.map(lambda p, g: p - 0.1 * (g + 0.1 * p), expected, g)
    chex.assert_trees_all_close(chained, expected, rtol=1e-6)


def test_our_transform_inside_optax_chain(problem):
    params, grads = problem
    ours, _ = run(optax.chain(optax.clip_by_global_norm(1.0), optim.adam(lr=0.01)), params, grads)
    reference, _ = run(
        optim.chain(optax.clip_by_global_norm(1.0), optim.adam(lr=0.01)), params, grads
    )
    manual = params
    state = optim.adam(lr=0.01).init(params)
    for g in grads:
        norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
        g = jax.tree.map(lambda x: x * jnp.minimum(1.0, 1.0 / norm), g)
        updates, state = optim.adam(lr=0.01).update(g, state, manual)
        manual = optim.apply_updates(manual, updates)
    chex.assert_trees_all_close(ours, manual, rtol=1e-6)
    chex.assert_trees_all_close(reference, manual, rtol=1e-6)


def test_optax_apply_updates_on_our_updates(problem):
    params, grads = problem
    ours, _ = run(optim.sgd(lr=0.1, momentum=0.9), params, grads)
    theirs, _ = run(optim.sgd(lr=0.1, momentum=0.9), params, grads, apply=optax.apply_updates)
    chex.assert_trees_all_equal(ours, theirs)


def test_adam_agrees_with_optax_adam(problem):
    params, grads = problem
    ours, _ = run(optim.adam(lr=0.01), params, grads)
    theirs, _ = run(optax.adam(0.01), params, grads)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_chain_passes_extra_args_to_members_that_take_them(problem):
    params, grads = problem
    seen = {}

    def update(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    probe = optim.GradientTransformationExtraArgs(lambda p: optim.EmptyState(), update)
    tx = optim.chain(optim.sgd(lr=0.1), probe, optax.scale(1.0))
    tx.update(grads[0], tx.init(params), params, value=3.0)
    assert seen == {"value": 3.0}


def test_partition_by_label_tree_equals_separate_runs(problem):
    params, grads = problem
    labels = jax.tree.map(lambda _: "slow", params)
    labels["layers"][0] = jax.tree.map(lambda _: "fast", labels["layers"][0])
    tx = optim.partition({"slow": optim.sgd(lr=0.01), "fast": optim.adam(lr=0.1)}, labels)
    result, state = run(tx, params, grads)
    fast, _ = run(optim.adam(lr=0.1), params["layers"][0], [g["layers"][0] for g in grads])
    slow, _ = run(optim.sgd(lr=0.01), params["vector"], [g["vector"] for g in grads])
    chex.assert_trees_all_close(result["layers"][0], fast, rtol=1e-6)
    chex.assert_trees_all_close(result["vector"], slow, rtol=1e-6)
    # Each inner state holds only its own leaves.
    adam_state = state.inner_states["fast"][0]
    assert len(jax.tree.leaves(adam_state.exp_avg)) == 2


def test_partition_by_labelling_function(problem):
    params, grads = problem
    label_fn = lambda tree: jax.tree.map(lambda x: "matrix" if x.ndim == 2 else "other", tree)  # noqa: E731
    tx = optim.partition({"matrix": optim.sgd(lr=1.0), "other": optim.sgd(lr=0.0)}, label_fn)
    result, _ = jax.jit(lambda p: run(tx, p, grads))(params)
    chex.assert_trees_all_close(result["vector"], params["vector"])
    w = params["layers"][0]["w"] - sum(g["layers"][0]["w"] for g in grads)
    chex.assert_trees_all_close(result["layers"][0]["w"], w, rtol=1e-6)


def test_partition_rejects_unknown_label(problem):
    params, _ = problem
    labels = jax.tree.map(lambda _: "a", params)
    with pytest.raises(ValueError, match="labels 'b' have no transform; transforms are given for 'a'"):
        optim.partition({"a": optim.sgd()}, jax.tree.map(lambda _: "b", params)).init(params)
    with pytest.raises(ValueError, match="labels must have the params' structure"):
        optim.partition({"a": optim.sgd()}, labels["layers"]).init(params)


def test_partition_labels_may_be_a_prefix_of_the_params(problem):
    params, grads = problem
    prefix = {"scalar": "frozen", "vector": "frozen", "layers": "train"}
    tx = optim.partition({"frozen": optim.sgd(lr=0.0), "train": optim.sgd(lr=1.0)}, prefix)
    result, _ = run(tx, params, grads[:1])
    chex.assert_trees_all_equal(result["vector"], params["vector"])
    chex.assert_trees_all_close(
        result["layers"], jax.tree.map(jnp.subtract, params["layers"], grads[0]["layers"]))


def test_inject_hyperparams_equals_plain_transform(problem):
    params, grads = problem
    plain, _ = run(optim.adam(lr=0.05, betas=(0.8, 0.99), amsgrad=True), params, grads)
    injected, state = run(
        optim.inject_hyperparams(optim.adam)(lr=0.05, betas=(0.8, 0.99), amsgrad=True),
        params, grads,
    )
    # Injected betas are stored as float32 arrays, Python floats stay float64 constants.
    chex.assert_trees_all_close(injected, plain, rtol=1e-5, atol=1e-6)
    assert set(state.hyperparams) == {"lr", "betas", "eps", "weight_decay"}
    assert int(state.count) == len(grads)


def _compiles_of_steps_with_new_hyperparams(params, grads, xla_compilations):
    """Steps a jitted update, setting lr and momentum between steps the documented way; returns
    the XLA compilations the steps made (not the arrays set between them)."""
    tx = optim.inject_hyperparams(optim.sgd)(lr=0.1, momentum=0.0)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    state, compiles, moved = tx.init(params), 0, []
    for i, new in enumerate([{}, {"lr": 0.0, "momentum": 0.9}, {"lr": 0.05}]):
        for name, value in new.items():
            state.hyperparams[name] = jnp.full_like(state.hyperparams[name], value)
        before = xla_compilations()
        new_params, state = step(params, state, grads[i])
        compiles += xla_compilations() - before
        moved.append(not jax.tree.all(jax.tree.map(jnp.array_equal, new_params, params)))
        params = new_params
    assert moved == [True, False, True]  # lr 0 -> no move: the new values were used
    return compiles


def test_inject_hyperparams_changes_values_without_recompiling(problem, xla_compilations):
    """Params committed to a device, as sharded params and a jitted step's outputs are: the
    state is committed there too, and so is what the README's recipe assigns."""
    params, grads = problem
    params = jax.device_put(params, jax.devices()[0])
    assert _compiles_of_steps_with_new_hyperparams(params, grads, xla_compilations) == 1


def test_inject_hyperparams_on_default_placed_params_compiles_once(problem, xla_compilations):
    params, grads = problem
    assert _compiles_of_steps_with_new_hyperparams(params, grads, xla_compilations) == 1


def test_inject_hyperparams_evaluates_schedules_at_the_step_count(problem):
    params, grads = problem
    tx = optim.inject_hyperparams(optim.sgd)(lr=lambda step: 0.5**step)
    _, state = run(tx, params, grads[:3])
    np.testing.assert_allclose(state.hyperparams["lr"], 0.25)  # used by the third update


def test_inject_hyperparams_validates_at_construction():
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.inject_hyperparams(optim.adam)(lr=-1)


def test_apply_updates_keeps_dtype_and_skips_none():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    updates = {"a": jnp.full(3, 0.5, jnp.float32), "b": None}
    out = optim.apply_updates(params, updates)
    assert out["a"].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(out["b"], params["b"])
    np.testing.assert_allclose(out["a"].astype(np.float32), 1.5)
