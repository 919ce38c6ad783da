"""torch's tensor lr against live torch: a 0-d float32 array as ``lr``.

torch keeps such an lr a tensor, so the scalars it derives from it (``lr / (1 - beta1**t)``,
``1 - lr * weight_decay``, Muon's ``lr * ratio``, SparseAdam's step size, ASGD's ``eta``,
Adafactor's ``alpha``) are float32 0-d tensor arithmetic, where a Python float lr gives float64
host arithmetic: 1e-8 apart relative, visible in float64 params at once. optim_jax forms them the
same way (``optim_jax.numerics.lr_operand``). Every algorithm, float32 and float64 params,
compared after every step to within a few ulps of each leaf's scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.torch_reference import run_torch, sparse_to_torch
from helpers.trajectories import jax_trajectory as run_jax
from helpers.trees import like_tree, muon_tree, random_tree, sparse_grads, sparse_tree

STEPS = 10

# name -> (pure factory, torch class name, options that make torch derive scalars from lr)
CASES = {
    "sgd": (optim.sgd, "SGD", {"momentum": 0.9, "weight_decay": 0.1}),
    "adam": (optim.adam, "Adam", {"weight_decay": 0.1, "amsgrad": True}),
    "adam-decoupled": (optim.adam, "Adam", {"weight_decay": 0.3, "decoupled_weight_decay": True}),
    "adamw": (optim.adamw, "AdamW", {"lr": 0.05, "weight_decay": 0.3, "maximize": True}),
    "adamax": (optim.adamax, "Adamax", {"lr": 0.1, "weight_decay": 0.1}),
    "adagrad": (optim.adagrad, "Adagrad", {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1}),
    "adadelta": (optim.adadelta, "Adadelta", {"lr": 0.5, "weight_decay": 0.1}),
    "asgd": (optim.asgd, "ASGD", {"lr": 0.05, "lambd": 0.05, "alpha": 0.5, "t0": 3}),
    "nadam": (optim.nadam, "NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True,
                                     "momentum_decay": 6e-3}),
    "radam": (optim.radam, "RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    "rmsprop": (optim.rmsprop, "RMSprop", {"centered": True, "momentum": 0.5}),
    "rprop": (optim.rprop, "Rprop", {"lr": 0.05}),
    # lr 0.5: torch's rho = min(lr, 1/sqrt(t)) is the tensor lr up to t = 4, a host float after
    "adafactor": (optim.adafactor, "Adafactor", {"lr": 0.5, "weight_decay": 0.1}),
    "muon": (optim.muon, "Muon", {"lr": 0.02, "weight_decay": 0.2}),
    "sparse_adam": (optim.sparse_adam, "SparseAdam", {"lr": 0.05}),
}


def problem(name, dtype):
    """Initial params and gradients for ``name`` (Muon: matrices; SparseAdam: sparse)."""
    rng = np.random.default_rng(5)
    if name == "muon":
        params = muon_tree(rng, dtype)
        return params, [like_tree(rng, params) for _ in range(STEPS)]
    if name == "sparse_adam":
        params = sparse_tree(rng, dtype)
        return params, sparse_grads(rng, params)[:STEPS]
    params = random_tree(rng, dtype)
    return params, [like_tree(rng, params) for _ in range(STEPS)]


def torch_run(torch, name, params, grads, make=None):
    _, torch_name, options = CASES[name]
    options = {**options, "lr": torch.tensor(options.get("lr", 0.01))}
    if name not in ("muon", "sparse_adam"):
        options["foreach"] = False  # the single-tensor reference implementation
    make = make or (lambda tensors: getattr(torch.optim, torch_name)(tensors, **options))
    to_grad = sparse_to_torch(torch) if name == "sparse_adam" else None
    return run_torch(torch, make, params, grads, to_grad=to_grad)


def assert_within_ulps(ours, reference, dtype, ulps=None):
    """Every leaf after every step within ``ulps`` ulps of its largest element's magnitude;
    by default one ulp plus one per step, the rounding noise of XLA's own rewrites (a division
    by a scalar becomes a multiplication by its reciprocal, multiply-adds fuse), which torch's
    kernels do not share."""
    for step, (a, b) in enumerate(zip(ours, reference)):
        bound = 2 + step if ulps is None else ulps
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            x = np.asarray(x)
            assert x.dtype == y.dtype == dtype
            unit = np.spacing(np.max(np.abs(y)).astype(dtype))
            error = float(np.max(np.abs(x - y)) / unit)
            assert error <= bound, f"after step {step + 1}: {error:.3g} ulps"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_pure_transform_with_tensor_lr_matches_torch(torch_module, name, dtype):
    """The pure face with ``lr=jnp.asarray(lr, float32)``: float64 params under x64, float32
    params without it (the float32 bias corrections of x64-less runs cost an ulp here and
    there)."""
    factory, _, options = CASES[name]
    with jax.enable_x64(dtype == np.float64):
        params, grads = problem(name, dtype)
        reference = torch_run(torch_module, name, params, grads)
        lr = jnp.asarray(options.get("lr", 0.01), jnp.float32)
        ours = run_jax(factory(**{**options, "lr": lr}), params, grads)
        assert_within_ulps(ours, reference, dtype)


def test_tensor_lr_rounding_is_visible_in_float64(torch_module, x64):
    """The case the tests above guard: torch's float32 ``1 - lr * weight_decay`` and
    ``lr / (1 - beta1**t)`` move float64 params by ~1e-9 relative from what float64 host
    arithmetic gives, a million ulps; optim_jax follows the tensor, not the float."""
    params, grads = problem("adam-decoupled", np.float64)
    reference = torch_run(torch_module, "adam-decoupled", params, grads)
    options = CASES["adam-decoupled"][2]
    with_float = run_jax(optim.adam(lr=0.01, **options), params, grads)
    with_array = run_jax(optim.adam(lr=jnp.asarray(0.01, jnp.float32), **options), params, grads)
    with pytest.raises(AssertionError, match="ulps"):
        assert_within_ulps(with_float, reference, np.float64, 1e4)
    assert_within_ulps(with_array, reference, np.float64)


def stateful_class(name):
    return getattr(optim, CASES[name][1])  # torch's class name, exported beside the factory


@pytest.mark.parametrize("name", [n for n in CASES if n != "adam-decoupled"])
def test_stateful_class_with_tensor_lr_matches_torch(torch_module, name):
    """The torch-style class, x64 off: its float32 hyperparameter vector carries the float32
    lr through unchanged, so the step derives its scalars from it as torch does. (With x64
    on the class holds hyperparameters in float64, which turns a tensor lr into a float one.)"""
    _, _, options = CASES[name]
    params, grads = problem(name, np.float32)
    reference = torch_run(torch_module, name, params, grads)
    opt = stateful_class(name)(
        jax.tree.map(jnp.asarray, params),
        **{**options, "lr": jnp.asarray(options.get("lr", 0.01), jnp.float32)},
    )
    ours = []
    for g in grads:
        opt.grad = g
        opt.step()
        ours.append(jax.tree.map(np.asarray, opt.params))  # the next step donates them
    assert_within_ulps(ours, reference, np.float32)
