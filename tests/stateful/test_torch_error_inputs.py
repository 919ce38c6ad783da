"""torch's own optimizer error inputs, walked against optim_jax's stateful classes.

torch lists, for every optimizer, the inputs its constructor (or first ``step``) must reject:
``torch.testing._internal.common_optimizers.optim_db``, each entry's
``optim_error_inputs_func(device='cpu', dtype=...)``. This walks that list itself, so torch's next
release shows up here as a failing test, not as silent drift: each input's params and kwargs are
converted (tensors to JAX arrays, the same tensor to the same array, ``(name, tensor)`` pairs
kept, sparse tensors to ``jax.experimental.sparse.BCOO``), the optim_jax class of the same name
is built from them, and the exception type and message must be torch's (``pytest.raises`` with
torch's regex, ``pytest.warns`` for its warnings), as torch's ``test_errors`` asserts them.

Deliberate differences, each asserted as what optim_jax does instead (README, "torch
differences"):

- a single tensor as ``params`` is torch's ``TypeError``; here a single array is a one-leaf
  pytree, which is valid ``params``;
- torch's ``foreach=True`` cannot take a tensor ``lr`` or tensor ``betas`` (a limit of its
  multi-tensor kernels); here ``foreach`` is accepted and ignored, so the input is valid;
- torch rejects complex params of Adafactor and Muon at the first ``step()``; here the same
  error (type and message) comes at construction, where the params are first seen.
"""

import sys
import types
import unittest

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import sparse

import optim_jax

torch = pytest.importorskip("torch")  # conftest makes torch required in CI

try:  # torch's internal test helpers import expecttest, a dependency of torch's own test suite
    import expecttest  # noqa: F401
except ImportError:  # only its TestCase base class is used while importing; nothing runs on it
    sys.modules["expecttest"] = types.SimpleNamespace(TestCase=unittest.TestCase)

from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db  # noqa: E402

# desc of torch's input -> why optim_jax accepts it (asserted: construction succeeds)
ACCEPTED = {
    "invalid param type": "a single array is a one-leaf pytree, valid params",
    "lr as Tensor doesn't work with foreach & not capturable": "foreach is ignored",
    "betas\\[0\\] as a Tensor is not supported for capturable=False and foreach=True": (
        "foreach is ignored"
    ),
}
RAISED_AT_CONSTRUCTION = "does not support complex parameters"  # torch's step-time errors


def to_jax(value, memo):
    """``value`` with torch tensors replaced by JAX arrays; one tensor gives one array object
    (duplicates are found by identity), sparse tensors give BCOO arrays."""
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            dense = value.detach().to_dense() if value.is_sparse else value.detach()
            array = jnp.asarray(dense.numpy())
            memo[id(value)] = sparse.BCOO.fromdense(array) if value.is_sparse else array
        return memo[id(value)]
    if isinstance(value, dict):
        return {k: to_jax(v, memo) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_jax(v, memo) for v in value)
    return value


def error_inputs():
    cases = []
    for info in optim_db:
        name = info.optim_cls.__name__
        for dtype in (torch.float32, torch.float64):
            inputs = info.optim_error_inputs_func(device="cpu", dtype=dtype)
            for index, error_input in enumerate(inputs):
                desc = error_input.optimizer_error_input.desc
                cases.append(pytest.param(
                    name, error_input, id=f"{name}-{str(dtype)[6:]}-{index}-{desc[:40]}"
                ))
    return cases


ERROR_INPUTS = error_inputs()


def build(name, error_input, default_params=None):
    """The optim_jax class ``name`` built from torch's input, converted (``params=None``, for
    inputs whose error comes before torch looks at the params, is passed on as it is unless
    ``default_params`` are given)."""
    memo = {}
    optim_input = error_input.optimizer_error_input
    params = to_jax(optim_input.params, memo)
    kwargs = to_jax(optim_input.kwargs, memo)
    if params is None and default_params is not None:
        params = default_params
    return getattr(optim_jax, name)(params, **kwargs)


def test_the_walk_covers_every_optimizer_and_input():
    names = {param.values[0] for param in ERROR_INPUTS}
    assert names == {info.optim_cls.__name__ for info in optim_db}
    assert all(hasattr(optim_jax, name) for name in names)
    assert len(ERROR_INPUTS) >= 2 * 124  # torch 2.13's list, float32 and float64


@pytest.mark.parametrize("name, error_input", ERROR_INPUTS)
def test_torch_error_input(name, error_input):
    desc = error_input.optimizer_error_input.desc
    expected, regex = error_input.error_type, error_input.error_regex
    if desc in ACCEPTED:
        opt = build(name, error_input, default_params=[jnp.ones((1, 1))])
        assert jax.tree.leaves(opt.params)
    elif error_input.error_on == OptimizerErrorEnum.STEP_ERROR:
        assert RAISED_AT_CONSTRUCTION in regex, "a new kind of step-time error in torch's list"
        with pytest.raises(expected, match=regex):
            build(name, error_input)
    elif issubclass(expected, Warning):
        with pytest.warns(expected, match=regex):
            build(name, error_input)
    else:
        with pytest.raises(expected, match=regex):
            build(name, error_input)


def test_complex_params_raise_at_construction_and_at_init():
    """torch's step-time complex errors, here at construction and at the pure ``init``."""
    z = jnp.ones((2, 2), jnp.complex64)
    for cls, factory in ((optim_jax.Adafactor, optim_jax.adafactor),
                         (optim_jax.Muon, optim_jax.muon)):
        message = f"{cls.__name__} does not support complex parameters"
        with pytest.raises(RuntimeError, match=message):
            cls([z])
        with pytest.raises(RuntimeError, match=message):
            factory().init([z])


def test_array_lr_and_betas_are_checked_in_the_pure_face_too():
    for factory in (optim_jax.sgd, optim_jax.adam, optim_jax.adafactor, optim_jax.muon,
                    optim_jax.sparse_adam, optim_jax.lbfgs):
        with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
            factory(lr=jnp.asarray([1e-3, 1e-3]))
    with pytest.raises(ValueError, match="betas must be either both floats or both Tensors"):
        optim_jax.adamw(betas=(0.9, jnp.asarray(0.99)))
    with pytest.raises(ValueError, match=r"Tensor betas\[1\] must be 1-element"):
        optim_jax.adam(betas=(jnp.asarray(0.9), jnp.asarray([0.99, 0.9])))
    optim_jax.adam(betas=(jnp.asarray(0.9), jnp.asarray(0.99)))  # both arrays: fine
    with pytest.raises(ValueError, match=r"Sparse params at indices \[\[0, 0\]\]: SparseAdam"):
        optim_jax.sparse_adam().init([sparse.BCOO.fromdense(jnp.eye(2))])
