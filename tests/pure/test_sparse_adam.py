"""SparseAdam against live torch.optim.SparseAdam, which needs sparse gradients: 25 steps in
float32 and float64 with half the entries of every gradient zero (entries without gradient never
move), nn.Embedding-style uncoalesced row gradients, tensor lr and schedules, the two-group class
against torch's class, a msgpack state_dict round trip, torch's refusals, dtypes under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.torch_reference import run_torch, sparse_to_torch
from helpers.trajectories import (STEPS, assert_same_trajectory, class_matches_torch,
                                  jax_trajectory, round_trip_continues_exactly)
from helpers.trees import sparse_grads, sparse_tree
from optim_jax import SparseAdam
from optim_jax.sparse_adam import sparse_adam

SPARSE_ADAM_OPTIONS = [
    # torch's optim_inputs_func_sparseadam (tensor lr below)
    {},
    {"lr": 0.01},
    {"maximize": True},
    # harder
    {"lr": 0.05, "betas": (0.0, 0.99), "eps": 1e-6},
    {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3, "maximize": True},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SPARSE_ADAM_OPTIONS, ids=str)
def test_sparse_adam_trajectory_matches_torch_with_sparse_gradients(torch_module, dtype, options):
    torch = torch_module
    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(6)
        params = sparse_tree(rng, dtype)
        grads = sparse_grads(rng, params)
        reference = run_torch(
            torch, lambda t: torch.optim.SparseAdam(t, **options), params, grads,
            to_grad=sparse_to_torch(torch),
        )
        ours = jax_trajectory(sparse_adam(**options), params, grads)
        assert_same_trajectory(ours, reference, dtype)
        # entries without gradient never move, bit for bit
        for before, after, g in zip([params] + ours[:-1], ours, grads):
            for b, a, gl in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(g)):
                np.testing.assert_array_equal(np.asarray(a)[gl == 0], np.asarray(b)[gl == 0])


def test_sparse_adam_matches_torch_embedding_style_uncoalesced_gradients(torch_module, x64):
    """Row-sparse (hybrid) gradients with repeated rows, as nn.Embedding(sparse=True) makes:
    torch coalesces (sums) the repeats; the JAX gradient is the dense sum."""
    torch = torch_module
    rng = np.random.default_rng(7)
    table = rng.standard_normal((12, 3))
    steps = []
    for _ in range(STEPS):
        rows = rng.integers(0, 12, size=5)
        steps.append((rows, rng.standard_normal((5, 3))))

    def sparse(step):
        rows, values = step
        return torch.sparse_coo_tensor(torch.tensor(rows)[None], torch.tensor(values), (12, 3),
                                       check_invariants=True)

    dense = [{"table": sparse(s).to_dense().numpy()} for s in steps]
    grads = iter(steps)
    reference = run_torch(
        torch, lambda t: torch.optim.SparseAdam(t, lr=0.03), {"table": table}, dense,
        to_grad=lambda g: sparse(next(grads)),
    )
    ours = jax_trajectory(sparse_adam(lr=0.03), {"table": table}, dense)
    assert_same_trajectory(ours, reference, np.float64)


def test_sparse_adam_tensor_lr_matches_torch(torch_module):
    """float32, as torch's tensor lr also makes its per-step scalar arithmetic float32."""
    torch = torch_module
    rng = np.random.default_rng(8)
    params = sparse_tree(rng, np.float32)
    grads = sparse_grads(rng, params)
    reference = run_torch(torch, lambda t: torch.optim.SparseAdam(t, lr=torch.tensor(0.001)),
                          params, grads, to_grad=sparse_to_torch(torch))
    ours = jax_trajectory(sparse_adam(lr=jnp.asarray(0.001)), params, grads)
    assert_same_trajectory(ours, reference, np.float32)


def test_sparse_adam_schedule_matches_torch_with_lr_set_each_step(torch_module, x64):
    torch = torch_module
    rng = np.random.default_rng(8)
    params = sparse_tree(rng, np.float64)
    grads = sparse_grads(rng, params)
    schedule = lambda step: 0.05 * 0.9 ** step  # noqa: E731
    reference = run_torch(torch, lambda t: torch.optim.SparseAdam(t), params, grads,
                          to_grad=sparse_to_torch(torch), lrs=[schedule(k) for k in range(STEPS)])
    ours = jax_trajectory(sparse_adam(lr=schedule), params, grads)
    assert_same_trajectory(ours, reference, np.float64)


def split_sparse(tree):
    return tree["layers"], {"scalar": tree["scalar"], "vector": tree["vector"], "embedding": tree["embedding"]}


def test_sparse_adam_class_with_two_groups_matches_torch(torch_module):
    torch = torch_module
    rng = np.random.default_rng(9)
    params = sparse_tree(rng, np.float32)
    opt, theirs, tensors = class_matches_torch(
        torch, SparseAdam, torch.optim.SparseAdam, {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.03, "eps": 1e-4, "maximize": True}, split_sparse, params,
        sparse_grads(rng, params), sparse_to_torch(torch),
    )
    assert set(opt.state[0]) == set(theirs.state[tensors[0]])


def test_sparse_adam_state_dict_round_trip_continues_exactly():
    rng = np.random.default_rng(10)
    params = sparse_tree(rng, np.float32)

    def make(params):
        first, second = split_sparse(jax.tree.map(np.copy, params))
        return SparseAdam([{"params": first}, {"params": second, "lr": 0.05}], lr=0.01)

    round_trip_continues_exactly(make, split_sparse, params, sparse_grads(rng, params)[:6])


def test_sparse_adam_rejects_complex_like_torch(torch_module):
    torch = torch_module
    with pytest.raises(ValueError) as theirs:
        torch.optim.SparseAdam([{"params": [torch.zeros(2)]},
                                {"params": [torch.zeros(2, dtype=torch.complex64)]}])
    real, cplx = jnp.zeros(2), jnp.zeros(2, jnp.complex64)
    with pytest.raises(ValueError) as ours:
        SparseAdam([{"params": [real]}, {"params": [cplx]}])
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match=r"^Complex params at indices \[\[0, 1\]\]: SparseAdam does "
                                         r"not support complex parameters$"):
        sparse_adam().init([real, cplx])


def find_adam_state(state):
    """The AdamState inside a (possibly injected) chain's state."""
    if isinstance(state, optim.AdamState):
        return state
    found = [s for s in map(find_adam_state, state) if s is not None] if isinstance(state, tuple) else []
    return found[0] if found else None


def test_sparse_adam_keeps_dtypes_under_jit():
    params = {"bf16": jnp.linspace(-1, 1, 8, dtype=jnp.bfloat16), "f16": jnp.ones(4, jnp.float16)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25).at[0].set(0), params)
    for tx in (sparse_adam(lr=0.1), optim.inject_hyperparams(sparse_adam)(lr=0.1)):
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        new = optim.apply_updates(params, updates)
        for name in params:
            assert new[name].dtype == params[name].dtype
            assert find_adam_state(state).exp_avg[name].dtype == params[name].dtype
            assert new[name][0] == params[name][0] and new[name][1] != params[name][1]
