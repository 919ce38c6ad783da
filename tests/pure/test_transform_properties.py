"""Properties every pure transform must have: dtype preservation, jit == eager, vmap == loop,
and closed-form first steps on arbitrary shapes (hypothesis). Differentiability:
test_differentiation.py."""

import chex
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optim_jax as optim
from helpers.algorithms import ALGORITHMS, rich_options
from helpers.trajectories import committed
from helpers.trees import like_tree, random_tree


def build(name, injected=False):
    factory = ALGORITHMS[name][0]
    return (optim.inject_hyperparams(factory) if injected else factory)(**rich_options(name))


def steps(tx, params, grads_per_step, update=None):
    """Params and state after the steps; params and state committed to the device first, so
    that a jitted ``update`` compiles once (see helpers.trajectories.committed)."""
    update = update or tx.update
    params = committed(params)
    state = committed(tx.init(params))
    for grads in grads_per_step:
        updates, state = update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("injected", [False, True], ids=["constants", "injected"])
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_leaf_keeps_its_dtype(name, injected):
    params = {
        "bf16": jnp.linspace(-1, 1, 8, dtype=jnp.bfloat16),
        "f16": jnp.linspace(-1, 1, 4, dtype=jnp.float16),
        "f32": jnp.ones((2, 3), jnp.float32),
    }
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    tx = build(name, injected)
    new_params, state = steps(tx, params, [grads] * 3, jax.jit(tx.update))
    chex.assert_trees_all_equal_dtypes(new_params, params)
    for field in ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for tree in find_fields(state, field):
            chex.assert_trees_all_equal_dtypes(tree, params)
    assert not np.allclose(np.asarray(new_params["bf16"], np.float32), np.asarray(params["bf16"], np.float32))


def find_fields(state, field):
    """Every value named ``field`` in a nest of NamedTuples, tuples and dicts."""
    if hasattr(state, "_fields"):
        found = [getattr(state, field)] if field in state._fields else []
        return found + [x for child in state for x in find_fields(child, field)]
    if isinstance(state, (tuple, list)):
        return [x for child in state for x in find_fields(child, field)]
    if isinstance(state, dict):
        return [x for child in state.values() for x in find_fields(child, field)]
    return []


class JitEqualsEagerTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*ALGORITHMS)
    def test_update(self, name):
        rng = np.random.default_rng(3)
        params = jax.tree.map(jnp.asarray, random_tree(rng))
        grads = [jax.tree.map(jnp.asarray, like_tree(rng, params)) for _ in range(4)]
        tx = build(name)
        ours, state = steps(tx, params, grads, self.variant(tx.update))
        reference, reference_state = steps(tx, params, grads)
        chex.assert_trees_all_close(ours, reference, rtol=2e-6, atol=1e-7)
        chex.assert_trees_all_close(state, reference_state, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_vmap_over_independent_problems_equals_a_loop(name):
    rng = np.random.default_rng(4)
    batch = 6
    params = jnp.asarray(rng.standard_normal((batch, 7)).astype(np.float32))
    grads = [jnp.asarray(rng.standard_normal((batch, 7)).astype(np.float32)) for _ in range(5)]
    tx = build(name)

    def solve(p, gs):
        return steps(tx, p, list(gs))[0]

    # both compiled: one program for the batch, one reused for each problem of the loop
    vmapped = jax.jit(jax.vmap(solve))(params, jnp.stack(grads, axis=1))
    one = jax.jit(solve)
    looped = jnp.stack([one(params[i], [g[i] for g in grads]) for i in range(batch)])
    chex.assert_trees_all_close(vmapped, looped, rtol=2e-6, atol=1e-7)


arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    elements=st.floats(-100, 100, width=32).filter(lambda x: abs(x) > 1e-3),
)


@settings(max_examples=15, deadline=None)
@given(grad=arrays, lr=st.floats(1e-4, 1.0), beta1=st.floats(0.0, 0.99))
def test_first_adam_step_is_lr_times_the_sign(grad, lr, beta1):
    """m_hat = g and sqrt(v_hat) = |g| at step 1, so the update is -lr * g / (|g| + eps)."""
    grad = jnp.asarray(grad)
    params = jnp.zeros_like(grad)
    tx = optim.adam(lr=lr, betas=(beta1, 0.999), eps=0.0)
    updates, state = tx.update(grad, tx.init(params), params)
    np.testing.assert_allclose(updates, -lr * np.sign(grad), rtol=2e-5)
    assert int(find_fields(state, "step")[0]) == 1


@settings(max_examples=25, deadline=None)
@given(
    grad=arrays,
    lr=st.floats(1e-4, 1.0),
    momentum=st.floats(0.1, 0.99),
    weight_decay=st.floats(0.0, 0.5),
)
def test_first_sgd_momentum_step_uses_the_gradient_as_buffer(grad, lr, momentum, weight_decay):
    grad = jnp.asarray(grad)
    params = jnp.ones_like(grad)
    tx = optim.sgd(lr=lr, momentum=momentum, weight_decay=weight_decay)
    updates, state = tx.update(grad, tx.init(params), params)
    np.testing.assert_allclose(updates, -lr * (grad + weight_decay), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(find_fields(state, "momentum_buffer")[0], grad + weight_decay, rtol=1e-6)
