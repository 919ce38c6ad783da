"""Bad hyperparameters raise torch's own ValueError messages, in both pure and injected forms."""

import jax.numpy as jnp
import pytest

import optim_jax as optim
from helpers.algorithms import VALIDATION

CASES = [
    (optim.sgd, {"lr": -0.1}, "Invalid learning rate: -0.1"),
    (optim.sgd, {"momentum": -1}, "Invalid momentum value: -1"),
    (optim.sgd, {"weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
    (optim.sgd, {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    (optim.sgd, {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
     "Nesterov momentum requires a momentum and zero dampening"),
    (optim.adam, {"lr": -1e-3}, "Invalid learning rate: -0.001"),
    (optim.adam, {"eps": -1e-08}, "Invalid epsilon value: -1e-08"),
    (optim.adam, {"betas": (1.5, 0.9)}, "Invalid beta parameter at index 0: 1.5"),
    (optim.adam, {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    (optim.adam, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    (optim.adamw, {"betas": (-0.1, 0.9)}, "Invalid beta parameter at index 0: -0.1"),
    (optim.adamw, {"lr": jnp.asarray(-2.0)}, "Invalid learning rate: -2.0"),
]


@pytest.mark.parametrize("injected", [False, True], ids=["pure", "injected"])
@pytest.mark.parametrize("factory, options, message", CASES + VALIDATION)
def test_torch_messages(factory, options, message, injected):
    build = optim.inject_hyperparams(factory) if injected else factory
    with pytest.raises(ValueError) as error:
        build(**options)
    assert str(error.value) == message


def test_betas_must_be_a_pair():
    with pytest.raises(ValueError, match=r"Invalid betas: 0.9 \(expected a pair"):
        optim.adam(betas=0.9)


def test_valid_edge_values_are_accepted():
    optim.sgd(lr=0.0, momentum=0.0, nesterov=False)
    optim.adam(lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)
