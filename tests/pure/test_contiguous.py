"""``contiguous(tx)`` and ``Packing``: the pure face of contiguous buffers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import optim_jax as optim

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def mixed_tree(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            "b": [jnp.asarray(rng.normal(size=4), jnp.bfloat16),
                  jnp.asarray(rng.normal(size=(2, 1, 2)), jnp.float16)],
            "c": jnp.asarray(rng.normal(size=5), jnp.float32)}


@given(shapes=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=6),
       kinds=st.lists(st.sampled_from(range(3)), min_size=6, max_size=6))
@settings(max_examples=15, deadline=None)
def test_pack_then_unpack_gives_the_tree_back_with_one_buffer_per_dtype(shapes, kinds):
    tree = [jnp.arange(int(np.prod(s)), dtype=DTYPES[k]).reshape(s)
            for s, k in zip(shapes, kinds)]
    packing = optim.Packing.of(tree)
    buffers = packing.pack(tree)
    assert set(buffers) == {jnp.dtype(x.dtype).name for x in tree}
    assert all(b.ndim == 1 for b in buffers.values())
    chex.assert_trees_all_equal(packing.unpack(buffers), tree)
    assert hash(packing) == hash(optim.Packing.of(tree)) and packing == optim.Packing.of(tree)


@pytest.mark.parametrize("make", [
    lambda: optim.adam(lr=0.1, weight_decay=0.01),
    lambda: optim.sgd(lr=0.1, momentum=0.9, nesterov=True),
    lambda: optim.rmsprop(lr=0.01, centered=True),
], ids=["adam", "sgd", "rmsprop"])
def test_contiguous_updates_equal_the_per_leaf_ones_and_the_state_stays_packed(make):
    params, grads = mixed_tree(0), mixed_tree(1)
    tx, flat = make(), optim.contiguous(make())
    state, flat_state = tx.init(params), flat.init(params)
    assert len(jax.tree.leaves(flat_state)) < len(jax.tree.leaves(state))
    update = jax.jit(flat.update)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        flat_updates, flat_state = update(grads, flat_state, params)
        for a, b in zip(jax.tree.leaves(flat_updates), jax.tree.leaves(updates)):
            assert a.dtype == b.dtype and a.shape == b.shape
            eps = float(jnp.finfo(a.dtype).eps)
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                       rtol=4 * eps, atol=1e-7)
        params = optim.apply_updates(params, updates)


def test_packing_a_state_keeps_the_scalars_and_packs_the_moments():
    params = mixed_tree(2)
    packing = optim.Packing.of(params)
    state = optim.adam(lr=0.1).init(params)
    packed = packing.pack_state(state)
    assert packed[0].step.shape == ()
    assert set(packed[0].exp_avg) == {"float32", "bfloat16", "float16"}
    chex.assert_trees_all_equal(packing.unpack_state(packed), state)


def test_large_leaves_are_buffers_of_their_own_and_small_ones_share():
    tree = {"big": jnp.ones((200, 100)), "small": [jnp.ones(3), jnp.ones((2, 2))],
            "half": jnp.ones(5, jnp.bfloat16)}
    buffers = optim.Packing.of(tree).pack(tree)
    assert {k: v.shape for k, v in buffers.items()} == {
        "bfloat16": (5,), "float32#0": (20000,), "float32": (7,)}
