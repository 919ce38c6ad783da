"""Bad hyperparameters raise torch's own ValueError messages, in both pure and injected forms
(Muon's and SparseAdam's checked against live torch's constructor as well)."""

import jax.numpy as jnp
import pytest

import optim_jax as optim
from helpers.algorithms import VALIDATION
from optim_jax.muon import muon
from optim_jax.sparse_adam import sparse_adam

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


# The algorithms outside the table (the table's cases carry their own VALIDATION)
DEDICATED = [
    (muon, {"lr": -0.1}, "Learning rate should be >= 0 but is: -0.1"),
    (muon, {"momentum": -0.5}, "momentum should be >= 0 but is: -0.5"),
    (muon, {"weight_decay": -1}, "weight decay should be >= 0 but is: -1"),
    (muon, {"adjust_lr_fn": "arbitrary"}, "Adjust learning rate function arbitrary is not supported"),
    (muon, {"ns_steps": 100}, "Number of steps must be less than 100 for computational efficiency"),
    (muon, {"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
    (sparse_adam, {"lr": 0.0}, "Invalid learning rate: 0.0"),
    (sparse_adam, {"eps": 0.0}, "Invalid epsilon value: 0.0"),
    (sparse_adam, {"lr": 1e-2, "betas": (1.0, 0.0)}, "Invalid beta parameter at index 0: 1.0"),
    (sparse_adam, {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
]


@pytest.mark.parametrize("injected", [False, True], ids=["pure", "injected"])
@pytest.mark.parametrize("factory, options, message", DEDICATED)
def test_muon_and_sparse_adam_messages_are_live_torchs(torch_module, factory, options, message,
                                                        injected):
    torch_class = {muon: torch_module.optim.Muon, sparse_adam: torch_module.optim.SparseAdam}[factory]
    torch_options = {k: v for k, v in options.items() if k not in ("ns_steps", "ns_coefficients")}
    if torch_options == options:  # checked by torch's constructor (the rest at its first step)
        with pytest.raises(ValueError) as theirs:
            torch_class([torch_module.zeros(2, 2)], **options)
        assert str(theirs.value) == message
    static = "ns_steps" if factory is muon else ()
    build = optim.inject_hyperparams(factory, static_args=static) if injected else factory
    with pytest.raises(ValueError) as ours:
        build(**options)
    assert str(ours.value) == message


def test_a_schedule_for_a_hyperparameter_other_than_lr_is_refused_at_construction():
    schedule = lambda step: 0.5  # noqa: E731
    for make, name in [(lambda: optim.sgd(momentum=schedule), "momentum"),
                       (lambda: optim.adamw(weight_decay=schedule), "weight_decay"),
                       (lambda: optim.adam(betas=(schedule, 0.999)), "beta parameter")]:
        with pytest.raises(TypeError, match=f"Invalid {name}.*taken for lr only"):
            make()
    optim.adam(lr=schedule)  # lr takes one
    optim.inject_hyperparams(optim.sgd)(lr=0.1, momentum=schedule)  # and so does this


def test_gradients_shaped_unlike_the_params_are_refused_naming_the_leaf():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(3)}
    for tx in (optim.sgd(0.1), optim.adam(), optim.contiguous(optim.adam())):
        state = tx.init(params)
        with pytest.raises(ValueError, match=r"\['b'\] is (of shape \[\]|float32\[\]), its param"):
            tx.update({"w": jnp.ones((2, 2)), "b": jnp.ones(())}, state, params)
        with pytest.raises(ValueError, match="structure"):
            tx.update({"w": jnp.ones((2, 2))}, state, params)


def test_contiguous_names_a_gradient_of_another_dtype():
    params = {"w": jnp.ones(4)}
    tx = optim.contiguous(optim.adam())
    with pytest.raises(ValueError, match=r"\['w'\] is bfloat16\[4\], its param float32\[4\]"):
        tx.update({"w": jnp.ones(4, jnp.bfloat16)}, tx.init(params), params)


def test_lbfgs_refuses_complex_params_clearly():
    with pytest.raises(ValueError, match="complex params are not supported"):
        optim.LBFGS([jnp.zeros(2, jnp.complex64)])
