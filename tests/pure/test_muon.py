"""Muon against live torch.optim.Muon: 2-d parameters only (tall ones orthogonalised
transposed), torch's bfloat16 Newton-Schulz bit for bit, 25 steps in float32 and float64 compared
after every step, tensor lr and schedules, the two-group class against torch's class, a msgpack
state_dict round trip that continues bit-identically, torch's refusals, jit/vmap and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.torch_reference import run_torch
from helpers.trajectories import (STEPS, assert_same_trajectory, class_matches_torch,
                                  jax_trajectory, round_trip_continues_exactly)
from helpers.trees import like_tree, muon_tree
from optim_jax import Muon
from optim_jax.muon import muon, zeropower_via_newtonschulz

MUON_OPTIONS = [
    # torch's optim_inputs_func_muon (tensor lr: test_muon_tensor_lr)
    {},
    {"lr": 0.01},
    {"weight_decay": 0.2},
    {"momentum": 0.8},
    {"ns_steps": 6},
    {"ns_coefficients": (3.4, -4.7, 2.0)},
    # harder
    {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
    {"lr": 0.05, "momentum": 0.3, "weight_decay": 0.0, "adjust_lr_fn": "original", "eps": 1e-3},
    {"lr": 0.01, "momentum": 0.0, "ns_steps": 1, "ns_coefficients": (2.0, -1.5, 0.5)},
]


def torch_muon(torch, options):
    return lambda tensors: torch.optim.Muon(tensors, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", MUON_OPTIONS, ids=str)
def test_muon_trajectory_matches_torch(torch_module, dtype, options):
    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(0)
        params = muon_tree(rng, dtype)
        grads = [like_tree(rng, params) for _ in range(STEPS)]
        reference = run_torch(torch_module, torch_muon(torch_module, options), params, grads)
        assert_same_trajectory(jax_trajectory(muon(**options), params, grads), reference, dtype)


def test_muon_tensor_lr_matches_torch(torch_module):
    """float32, as torch's tensor lr also makes its per-step scalar arithmetic float32."""
    torch = torch_module
    rng = np.random.default_rng(1)
    params = muon_tree(rng, np.float32)
    grads = [like_tree(rng, params) for _ in range(STEPS)]
    reference = run_torch(torch, torch_muon(torch, {"lr": torch.tensor(0.001)}), params, grads)
    ours = jax_trajectory(muon(lr=jnp.asarray(0.001)), params, grads)
    assert_same_trajectory(ours, reference, np.float32)


def test_muon_schedule_matches_torch_with_lr_set_each_step(torch_module, x64):
    rng = np.random.default_rng(1)
    params = muon_tree(rng, np.float64)
    grads = [like_tree(rng, params) for _ in range(STEPS)]
    schedule = lambda step: 0.02 * 0.9 ** step  # noqa: E731
    reference = run_torch(torch_module, torch_muon(torch_module, {}), params, grads,
                          lrs=[schedule(k) for k in range(STEPS)])
    assert_same_trajectory(jax_trajectory(muon(lr=schedule), params, grads), reference, np.float64)


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (9, 2), (16, 16), (24, 8)])
def test_newton_schulz_is_bit_identical_to_torch(torch_module, shape):
    """bfloat16 in, bfloat16 out, with torch's roundings (float32 and float64 inputs)."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    rng = np.random.default_rng(2)
    coefficients = (3.4445, -4.7750, 2.0315)
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            g = (rng.standard_normal(shape) * 3).astype(dtype)
            theirs = _zeropower_via_newtonschulz(torch_module.tensor(g), coefficients, 5, 1e-7)
            ours = jax.jit(zeropower_via_newtonschulz, static_argnums=(1, 2, 3))(
                jnp.asarray(g), coefficients, 5, 1e-7
            )
            assert ours.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(ours, np.float32), theirs.float().numpy())


def split_muon(tree):
    return {"tall": tree["tall"], "thin": tree["thin"]}, tree["layers"]


def test_muon_class_with_two_groups_matches_torch(torch_module):
    torch = torch_module
    rng = np.random.default_rng(3)
    params = muon_tree(rng, np.float32)
    opt, theirs, tensors = class_matches_torch(
        torch, Muon, torch.optim.Muon, {"lr": 0.02, "momentum": 0.9},
        {"lr": 0.05, "nesterov": False, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"},
        split_muon, params, [like_tree(rng, params) for _ in range(STEPS)],
        lambda g: torch.tensor(np.array(g)),
    )
    assert set(opt.state[0]) == set(theirs.state[tensors[0]]) == {"momentum_buffer"}


def test_muon_state_dict_round_trip_continues_exactly():
    rng = np.random.default_rng(4)
    params = muon_tree(rng, np.float32)

    def make(params):
        first, second = split_muon(jax.tree.map(np.copy, params))
        return Muon([{"params": first}, {"params": second, "nesterov": False}], lr=0.02)

    round_trip_continues_exactly(make, split_muon, params, [like_tree(rng, params) for _ in range(6)])


def test_muon_rejects_non_matrices_and_complex_like_torch(torch_module):
    message = "Muon only supports 2D parameters whereas we found a parameter with size: torch.Size([3])"
    with pytest.raises(ValueError) as theirs:
        torch_module.optim.Muon([torch_module.zeros(2, 2), torch_module.zeros(3)])
    assert str(theirs.value) == message
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    for build in (lambda: muon().init(params), lambda: Muon(params)):
        with pytest.raises(ValueError) as ours:
            build()
        assert str(ours.value) == message
    with pytest.raises(ValueError, match=r"torch.Size\(\[\]\)"):
        muon().init(jnp.zeros(()))
    with pytest.raises(RuntimeError, match="^Muon does not support complex parameters$"):
        muon().init(jnp.zeros((2, 2), jnp.complex64))


def test_muon_jit_vmap_and_dtypes():
    rng = np.random.default_rng(5)
    params = jnp.asarray(rng.standard_normal((2, 5, 3)).astype(np.float32))
    grads = [jnp.asarray(rng.standard_normal((2, 5, 3)).astype(np.float32)) for _ in range(3)]
    tx = muon(lr=0.02)

    def solve(p, gs):
        state = tx.init(p)
        for g in gs:
            updates, state = tx.update(g, state, p)
            p = optim.apply_updates(p, updates)
        return p

    looped = jnp.stack([solve(params[i], [g[i] for g in grads]) for i in range(2)])
    np.testing.assert_array_equal(jax.vmap(solve)(params, jnp.stack(grads, 1)), looped)
    np.testing.assert_array_equal(jax.jit(solve)(params[0], [g[0] for g in grads]), looped[0])
    low = {"bf16": jnp.ones((3, 2), jnp.bfloat16), "f16": jnp.ones((2, 2), jnp.float16)}
    injected = optim.inject_hyperparams(muon, static_args="ns_steps")(lr=0.1)
    updates, _ = jax.jit(injected.update)(
        jax.tree.map(lambda p: jnp.full_like(p, 0.25), low), injected.init(low), low
    )
    new = optim.apply_updates(low, updates)
    assert jax.tree.map(lambda p: p.dtype, new) == jax.tree.map(lambda p: p.dtype, low)
