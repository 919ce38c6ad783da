"""Trajectories of the pure transforms against live torch.optim, step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from algorithms import ALGORITHMS, cases
from conftest import like_tree, random_tree
from torch_reference import torch_trajectory

STEPS = 25
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def jax_trajectory(tx, params, grads_per_step):
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    trajectory = []
    for grads in grads_per_step:
        params, state = step(params, state, grads)
        trajectory.append(params)
    return trajectory


def assert_same_trajectory(ours, reference, dtype):
    for step, (a, b) in enumerate(zip(ours, reference)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype, (step, x.dtype, y.dtype)
            np.testing.assert_allclose(
                np.asarray(x), y, **TOLERANCE[dtype], err_msg=f"after step {step + 1}"
            )


def check_parity(torch, name, options, dtype, seed=0):
    factory, torch_name, _ = ALGORITHMS[name]
    rng = np.random.default_rng(seed)
    params = random_tree(rng, dtype)
    grads = [like_tree(rng, params) for _ in range(STEPS)]
    reference = torch_trajectory(torch, getattr(torch.optim, torch_name), options, params, grads)
    ours = jax_trajectory(factory(**options), params, grads)
    assert_same_trajectory(ours, reference, dtype)


@pytest.mark.parametrize("name, options", cases())
def test_float32_trajectory_matches_torch(torch_module, name, options):
    check_parity(torch_module, name, options, np.float32)


@pytest.mark.parametrize("name, options", cases())
def test_float64_trajectory_matches_torch(torch_module, x64, name, options):
    check_parity(torch_module, name, options, np.float64)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_scheduled_lr_matches_torch_with_lr_set_each_step(torch_module, x64, name):
    factory, torch_name, _ = ALGORITHMS[name]
    rng = np.random.default_rng(1)
    params = random_tree(rng, np.float64)
    grads = [like_tree(rng, params) for _ in range(STEPS)]
    schedule = lambda step: 0.1 * 0.9 ** step  # noqa: E731
    lrs = [schedule(k) for k in range(STEPS)]
    options = {"momentum": 0.9} if name == "sgd" else {}
    reference = torch_trajectory(
        torch_module, getattr(torch_module.optim, torch_name), options, params, grads, lrs
    )
    ours = jax_trajectory(factory(lr=schedule, **options), params, grads)
    assert_same_trajectory(ours, reference, np.float64)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_array_lr_matches_torch_tensor_lr(torch_module, name):
    factory, torch_name, _ = ALGORITHMS[name]
    rng = np.random.default_rng(2)
    params = random_tree(rng)
    grads = [like_tree(rng, params) for _ in range(STEPS)]
    reference = torch_trajectory(
        torch_module, getattr(torch_module.optim, torch_name),
        {"lr": torch_module.tensor(0.01)}, params, grads,
    )
    ours = jax_trajectory(factory(lr=jnp.asarray(0.01)), params, grads)
    assert_same_trajectory(ours, reference, np.float32)


@pytest.mark.parametrize("name, options", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True}),
    ("adam", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"lr": 0.05, "maximize": True}),
])
def test_complex_params_match_torch(torch_module, x64, name, options):
    """torch views complex params as real pairs; so do we (optim_jax.view_as_real)."""
    factory, torch_name, _ = ALGORITHMS[name]
    rng = np.random.default_rng(3)
    cplx = lambda shape: (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))  # noqa: E731
    params = {"z": cplx((3, 2)), "r": rng.standard_normal(4)}
    grads = [{"z": cplx((3, 2)), "r": rng.standard_normal(4)} for _ in range(STEPS)]
    reference = torch_trajectory(torch_module, getattr(torch_module.optim, torch_name), options, params, grads)
    ours = jax_trajectory(factory(**options), params, grads)
    assert_same_trajectory(ours, reference, np.float64)
