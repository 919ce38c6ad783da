"""Complex parameters: torch views them as real pairs (``torch.view_as_real``); so does
optim_jax (``optim_jax.view_as_real``). Trajectories against live torch for every algorithm that
takes them, the stateful class's state in the real view, and torch's refusals elsewhere."""

import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.algorithms import ALGORITHMS
from helpers.torch_reference import torch_trajectory
from helpers.trajectories import STEPS, assert_same_trajectory, jax_trajectory
from helpers.trees import complex_tree

# (algorithm, options): options that exercise the arithmetic on the real pairs
CASES = [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True}),
    ("adam", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"lr": 0.05, "maximize": True}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.2}),
    ("adadelta", {"lr": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("adamax", {"lr": 0.05, "weight_decay": 0.1}),
    ("asgd", {"lr": 0.05, "t0": 5, "lambd": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("nadam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("radam", {"lr": 0.05, "betas": (0.9, 0.99), "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01, "maximize": True}),
    ("rprop", {"lr": 0.01, "etas": (0.3, 1.5)}),
    ("rprop", {"maximize": True, "step_sizes": (1e-3, 0.1)}),
]


@pytest.mark.parametrize("name, options", CASES,
                         ids=[f"{name}-{'-'.join(map(str, options))}" for name, options in CASES])
def test_complex_params_match_torch(torch_module, x64, name, options):
    factory, torch_name, _ = ALGORITHMS[name]
    rng = np.random.default_rng(3)
    params = complex_tree(rng, scalar=True)
    grads = [complex_tree(rng, scalar=True) for _ in range(STEPS)]
    reference = torch_trajectory(torch_module, getattr(torch_module.optim, torch_name), options,
                                 params, grads)
    assert_same_trajectory(jax_trajectory(factory(**options), params, grads), reference, np.float64)


def test_complex_class_state_is_the_real_view():
    opt = optim.RMSprop({"z": jnp.ones((3,), jnp.complex64)}, lr=0.1, momentum=0.5)
    opt.grad = {"z": jnp.full((3,), 1 - 2j, jnp.complex64)}
    opt.step()
    assert opt.params["z"].dtype == jnp.complex64
    assert opt.state[0]["square_avg"].shape == (3, 2)


def test_adafactor_rejects_complex():
    for build in (lambda: optim.adafactor().init(jnp.zeros(2, jnp.complex64)),
                  lambda: optim.Adafactor([jnp.zeros(2, jnp.complex64)])):
        with pytest.raises(RuntimeError, match="^Adafactor does not support complex parameters$"):
            build()


@pytest.mark.parametrize("name, options", [("SGD", {"momentum": 0.9}), ("Adam", {})])
@pytest.mark.parametrize("how", ["closure", "backward"])
def test_the_classes_differentiate_complex_params_as_torch(torch_module, name, options, how):
    """jax.grad of a real loss gives a complex param dL/dx - i dL/dy; torch's gradient is its
    conjugate, and step(closure) and backward() take torch's, so both parts descend."""
    torch = torch_module
    target = np.array([1 + 1j, -2 + 0.5j], np.complex64)
    z = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    reference = getattr(torch.optim, name)([z], lr=0.1, **options)
    opt = getattr(optim, name)([jnp.zeros(2, jnp.complex64)], lr=0.1, **options)

    def loss(params):
        return jnp.sum(jnp.abs(params[0] - target) ** 2)

    for _ in range(4):
        reference.zero_grad()
        torch.sum(torch.abs(z - torch.from_numpy(target)) ** 2).backward()
        reference.step()
        if how == "closure":
            opt.step(loss)
        else:
            opt.zero_grad()
            opt.backward(loss)
            opt.step()
    np.testing.assert_allclose(np.asarray(opt.params[0]), z.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
