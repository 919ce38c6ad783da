"""clip_grad_norm against torch.nn.utils.clip_grad_norm_, live, and in a chain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optim_jax as optim
from helpers.trees import random_tree


def torch_clipped(torch, grads, max_norm, norm_type):
    leaves = jax.tree.leaves(grads)
    params = [torch.nn.Parameter(torch.zeros(np.shape(g), dtype=getattr(torch, str(g.dtype))))
              for g in leaves]
    for p, g in zip(params, leaves):
        p.grad = torch.tensor(np.asarray(g))
    torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    return jax.tree.unflatten(jax.tree.structure(grads), [p.grad.numpy() for p in params])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])
def test_matches_torch(torch_module, x64, dtype, norm_type, max_norm):
    grads = random_tree(np.random.default_rng(len(str(norm_type))), dtype)
    tx = optim.clip_grad_norm(max_norm, norm_type)
    clipped, _ = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads), tx.init(grads))
    expected = torch_clipped(torch_module, grads, max_norm, norm_type)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-30),
                 clipped, expected)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-2, 1e2))
def test_global_norm_after_clipping_is_at_most_max_norm(scale, max_norm):
    grads = jax.tree.map(lambda g: jnp.asarray(g) * scale,
                         random_tree(np.random.default_rng(0), np.float32))
    clipped, _ = optim.clip_grad_norm(max_norm).update(grads, optim.EmptyState())
    norm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(clipped))))
    original = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))))
    assert norm <= max_norm * (1 + 1e-5)
    np.testing.assert_allclose(norm, min(original, max_norm * original / (original + 1e-6)),
                               rtol=1e-5)


def test_first_in_a_chain_and_validated():
    tx = optim.chain(optim.clip_grad_norm(1.0), optim.sgd(0.1))
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * (20 / (20 + 1e-6)), rtol=1e-6)
    with pytest.raises(ValueError, match="Invalid max_norm: -1.0"):
        optim.clip_grad_norm(-1.0)
    with pytest.raises(ValueError, match="Invalid norm_type: 0.0"):
        optim.clip_grad_norm(1.0, 0.0)
