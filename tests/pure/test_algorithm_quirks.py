"""What the table-driven trajectories cannot show, per algorithm: torch's state names and
float32 scalar state, ASGD's averaged parameters, torch's quirks kept (lazy ASGD eta, Adagrad's
constructor-wide initial accumulator, Adafactor's group-wide epsilon1 from the first parameter),
Adafactor's state shapes, and RAdam's cancellation-free rho_t."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.algorithms import ALGORITHMS
from helpers.torch_reference import run_torch
from helpers.trajectories import (STEPS, TOLERANCE, committed, jax_trajectory, stateful_class,
                                  torch_optimizer)
from helpers.trees import like_tree, random_tree
from optim_jax.radam import sma_lengths


@pytest.mark.parametrize("name", ["adagrad", "adadelta", "adamax", "asgd", "nadam", "radam"])
def test_state_names_and_scalar_state_match_torch(torch_module, x64, name):
    """The same state entries as torch's, and the scalar ones (ASGD's eta and mu, NAdam's
    mu_product: float32 tensors in torch) bit-identical after 25 float64 steps."""
    torch = torch_module
    options = ALGORITHMS[name][2][-1]
    rng = np.random.default_rng(7)
    params = random_tree(rng, np.float64)
    opt = stateful_class(name)(params, **options)
    tensors = [torch.tensor(np.array(x), requires_grad=True) for x in jax.tree.leaves(params)]
    theirs = torch_optimizer(torch, name, tensors, options)
    for _ in range(STEPS):
        grads = like_tree(rng, params)
        opt.grad = grads
        opt.step()
        for t, g in zip(tensors, jax.tree.leaves(grads)):
            t.grad = torch.tensor(np.array(g))
        theirs.step()
    for index, tensor in enumerate(tensors):
        ours, reference = opt.state[index], theirs.state[tensor]
        assert set(ours) == set(reference)
        for key in ("eta", "mu", "mu_product"):
            if key in ours:
                assert ours[key].dtype == jnp.float32
                assert float(ours[key]) == reference[key].item(), key
        for key, value in reference.items():
            np.testing.assert_allclose(
                np.asarray(ours[key]), value.numpy(), rtol=1e-10, err_msg=key
            )


@pytest.mark.parametrize("t0", [0.0, 5, 1e6])
def test_asgd_averaged_params_match_torch(torch_module, x64, t0):
    """``ax`` follows torch's average (a copy of the params until t0 + 1, then the mean)."""
    torch = torch_module
    options = {"lr": 0.05, "t0": t0, "lambd": 0.01}
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    tx = ALGORITHMS["asgd"][0](**options)
    ours = committed(params)
    state = committed(tx.init(ours))
    opt = stateful_class("asgd")(params, **options)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    theirs = torch_optimizer(torch, "asgd", list(tensors.values()), options)
    update = jax.jit(tx.update)
    for _ in range(STEPS):
        grads = like_tree(rng, params)
        updates, state = update(grads, state, ours)
        ours = jax.tree.map(jnp.add, ours, updates)
        opt.grad = grads
        opt.step()
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        pure_ax = state[-1].ax
        for i, k in enumerate(sorted(tensors)):
            reference = theirs.state[tensors[k]]["ax"].numpy()
            for ax in (pure_ax[k], opt.state[i]["ax"]):
                np.testing.assert_allclose(np.asarray(ax), reference, rtol=1e-10, atol=1e-14)


def test_asgd_first_eta_is_the_lr_of_the_first_step(torch_module):
    """torch creates ASGD's state at the first step, with the lr the group has then."""
    torch = torch_module
    rng = np.random.default_rng(9)
    params = rng.standard_normal(4).astype(np.float32)
    opt = stateful_class("asgd")(params, lr=0.01)
    tensor = torch.tensor(params, requires_grad=True)
    theirs = torch.optim.ASGD([tensor], lr=0.01, foreach=False)
    opt.param_groups[0]["lr"] = theirs.param_groups[0]["lr"] = 0.1
    for _ in range(3):
        grad = rng.standard_normal(4).astype(np.float32)
        opt.grad = grad
        opt.step()
        tensor.grad = torch.tensor(grad)
        theirs.step()
        np.testing.assert_allclose(np.asarray(opt.params), tensor.detach().numpy(), rtol=1e-6)
    assert float(opt.state[0]["eta"]) == theirs.state[tensor]["eta"].item()


def test_adagrad_every_group_starts_from_the_constructor_accumulator(torch_module):
    """torch.optim.Adagrad fills ``sum`` from its defaults, ignoring a group's own value."""
    torch = torch_module
    params = [np.ones(2, np.float32), np.ones(3, np.float32)]
    groups = [{"params": params[0]}, {"params": params[1], "initial_accumulator_value": 5.0}]
    opt = stateful_class("adagrad")(groups, initial_accumulator_value=0.5)
    tensors = [torch.tensor(p) for p in params]
    theirs = torch.optim.Adagrad(
        [{"params": [tensors[0]]}, {"params": [tensors[1]], "initial_accumulator_value": 5.0}],
        initial_accumulator_value=0.5,
    )
    for i, t in enumerate(tensors):
        expected = theirs.state[t]["sum"].numpy()
        np.testing.assert_array_equal(np.asarray(opt.state[i]["sum"]), expected)
    assert opt.param_groups[1]["initial_accumulator_value"] == 5.0


@pytest.mark.parametrize("beta2", [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999])
@pytest.mark.parametrize("traced", [False, True], ids=["constant", "array"])
def test_radam_rho_t_is_accurate_in_float32(beta2, traced):
    """torch's rho_t, evaluated in float64 on the host, reproduced in float32 arithmetic: no
    cancellation (the direct formula is off by ~1e-2 in float32 for beta2 = 0.999)."""
    steps = np.concatenate([np.arange(1, 40), [100, 1000, 10**4, 10**5, 10**6]])
    beta = jnp.asarray(beta2, jnp.float32) if traced else beta2
    b = float(np.float32(beta2)) if traced else beta2  # the float32 value the array holds
    rho_inf, rho_t = jax.jit(lambda s: sma_lengths(beta, s))(jnp.asarray(steps, jnp.int32))
    assert rho_t.dtype == jnp.float32
    for t, ours in zip(steps, np.asarray(rho_t)):
        bt = b ** float(t)
        expected = 2 / (1 - b) - 1 - 2 * t * bt / (1 - bt) if b > 0 else 1.0
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6, err_msg=f"step {t}")
        assert (ours > 5) == (expected > 5)
    np.testing.assert_allclose(rho_inf, 2 / (1 - b) - 1, rtol=1e-6)


def test_adafactor_epsilon1_comes_from_the_first_parameter_like_torch(torch_module, x64):
    """torch sets eps1 = finfo(first param's dtype).eps and keeps it for the group."""
    rng = np.random.default_rng(12)
    params = [rng.standard_normal((3, 4)).astype(np.float32) * 1e-3, rng.standard_normal(6) * 1e-3]
    # the vector's second moment (~1e-18) sits below float32's eps1**2 (~1.4e-14) but far above
    # float64's (~4.9e-32): which epsilon the group uses decides the vector's steps
    grads = [[rng.standard_normal((3, 4)).astype(np.float32) * 1e-5, rng.standard_normal(6) * 1e-9]
             for _ in range(STEPS)]
    reference = run_torch(
        torch_module, lambda t: torch_module.optim.Adafactor(t, lr=0.1, foreach=False), params, grads
    )
    ours = jax_trajectory(optim.adafactor(lr=0.1), params, grads)
    for step, (a, b) in enumerate(zip(ours, reference)):
        np.testing.assert_allclose(a[0], b[0], **TOLERANCE[np.float32], err_msg=str(step))
        np.testing.assert_allclose(a[1], b[1], **TOLERANCE[np.float64], err_msg=str(step))
    # a float64-first tree would have used float64's epsilon instead: the results differ
    other = jax_trajectory(optim.adafactor(lr=0.1, eps=(2.0 ** -52, 1e-3)), params, grads)
    assert not np.allclose(other[-1][1], ours[-1][1], rtol=1e-8, atol=0)


def test_adafactor_state_names_and_shapes_match_torch(torch_module):
    torch = torch_module
    params = {"m": np.ones((2, 3, 4), np.float32), "v": np.ones(5, np.float32),
              "s": np.ones((), np.float32)}
    opt = optim.Adafactor(params)
    opt.grad = jax.tree.map(np.ones_like, params)
    opt.step()
    tensors = [torch.ones(2, 3, 4, requires_grad=True), torch.ones((), requires_grad=True),
               torch.ones(5, requires_grad=True)]  # jax.tree.leaves order: m, s, v
    theirs = torch.optim.Adafactor(tensors)
    for t in tensors:
        t.grad = torch.ones_like(t)
    theirs.step()
    for i, t in enumerate(tensors):
        ours = {k: v.shape for k, v in opt.state[i].items() if v.size}
        assert ours == {k: tuple(v.shape) for k, v in theirs.state[t].items()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_moving_averages_round_once_as_torchs_lerp(dtype, torch_module):
    """torch's ``lerp_`` computes a 16-bit float in float32 and rounds once (its weight a
    float32): Adam's ``exp_avg`` over bfloat16/float16 params is then torch's bit for bit."""
    torch = torch_module
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(4)]
    param = torch.nn.Parameter(torch.zeros(1000, dtype=getattr(torch, dtype)))
    reference = torch.optim.Adam([param], lr=0.1, betas=(0.7, 0.999), foreach=False)
    tx = optim.adam(lr=0.1, betas=(0.7, 0.999))
    params = jnp.zeros(1000, dtype)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        param.grad = torch.from_numpy(g).to(param.dtype)
        reference.step()
        _, state = update(jnp.asarray(g).astype(dtype), state, params)
    want = reference.state[param]["exp_avg"].float().numpy()
    np.testing.assert_array_equal(np.asarray(state[0].exp_avg, np.float32), want)


@pytest.mark.parametrize("momenta", [[0.0, 0.0, 0.9, 0.9], [0.9, 0.0, 0.0, 0.9]])
def test_an_injected_momentum_of_zero_leaves_the_buffer_as_torch_does(momenta, torch_module):
    """Under inject_hyperparams momentum is an array, so sgd keeps its buffer block; at 0 the
    gradient passes through (undampened) and the buffer and its count stay, as torch's SGD has
    no buffer yet, or leaves the one it has alone."""
    torch = torch_module
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(4).astype(np.float32) for _ in momenta]
    param = torch.nn.Parameter(torch.zeros(4))
    reference = torch.optim.SGD([param], lr=0.5, momentum=momenta[0], dampening=0.3)
    tx = optim.inject_hyperparams(optim.sgd)(lr=0.5, momentum=momenta[0], dampening=0.3)
    params = jnp.zeros(4)
    state = tx.init(params)
    for momentum, g in zip(momenta, grads):
        reference.param_groups[0]["momentum"] = momentum
        param.grad = torch.from_numpy(g)
        reference.step()
        state.hyperparams["momentum"] = jnp.asarray(momentum, state.hyperparams["momentum"].dtype)
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = optim.apply_updates(params, updates)
        np.testing.assert_allclose(params, param.detach().numpy(), rtol=1e-6, atol=1e-7)
