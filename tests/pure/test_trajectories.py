"""Trajectories of the pure transforms against live torch.optim, step by step: every option set
of the algorithm table in float32 and float64, a schedule, and an array lr."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers.algorithms import ALGORITHMS, cases
from helpers.torch_reference import torch_trajectory
from helpers.trajectories import STEPS, assert_same_trajectory, jax_trajectory
from helpers.trees import like_tree, random_tree


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
