"""Differentiating through the updates: the meta-gradient of a loss after a few steps with
respect to the learning rate, against central finite differences (float64), for every algorithm;
and SGD's against its closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.algorithms import ALGORITHMS, rich_options

# name -> (factory, options, param shape): the table's algorithms with their richest options on a
# vector, and more on matrices (Adafactor's factored moments, Muon) and SparseAdam.
GRADIENT_CASES = {
    **{name: (ALGORITHMS[name][0], rich_options(name), (5,)) for name in ALGORITHMS},
    "rmsprop-centered": (optim.rmsprop, {"momentum": 0.9, "centered": True, "weight_decay": 0.1}, (5,)),
    "rprop-etas": (optim.rprop, {"etas": (0.4, 1.3)}, (5,)),
    "adafactor-factored": (optim.adafactor, {"weight_decay": 0.1, "d": 1.5}, (3, 4)),
    "muon": (optim.muon, {"momentum": 0.9}, (3, 4)),
    "sparse_adam": (optim.sparse_adam, {"betas": (0.8, 0.99)}, (5,)),
}

# torch keeps ASGD's eta in a float32 tensor even for float64 params (so do we, for parity), so
# its meta-gradient agrees with finite differences only to float32 precision.
FINITE_DIFFERENCE_RTOL = {"asgd": 1e-3}


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_gradient_through_updates_matches_finite_differences(name, x64):
    factory, options, shape = GRADIENT_CASES[name]
    rng = np.random.default_rng(5)
    params = jnp.asarray(rng.standard_normal(shape))
    grads = [jnp.asarray(rng.standard_normal(shape)) for _ in range(3)]

    def meta_loss(lr):
        tx = factory(**{**options, "lr": lr})
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optim.apply_updates(p, updates)
        return jnp.sum(p ** 2)

    lr, h = 0.05, 1e-6
    value = jax.jit(meta_loss)  # a compiled program each, rather than op by op
    finite = (value(lr + h) - value(lr - h)) / (2 * h)
    np.testing.assert_allclose(
        jax.jit(jax.grad(meta_loss))(lr), finite, rtol=FINITE_DIFFERENCE_RTOL.get(name, 1e-6)
    )


def test_gradient_through_sgd_update_matches_the_closed_form(x64):
    params = jnp.array([1.0, -2.0, 0.5])
    grads = jnp.array([0.3, 0.1, -0.4])

    def loss_after_step(lr):
        tx = optim.sgd(lr=lr)
        updates, _ = tx.update(grads, tx.init(params), params)
        return jnp.sum(optim.apply_updates(params, updates) ** 2)

    lr = 0.1
    expected = jnp.sum(2 * (params - lr * grads) * -grads)
    np.testing.assert_allclose(jax.grad(loss_after_step)(lr), expected, rtol=1e-12)
