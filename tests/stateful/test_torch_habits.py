"""The mistakes torch users make get messages that say what to write instead."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim


def make():
    return optim.SGD({"w": jnp.ones(2)}, lr=0.1)


def test_a_zero_argument_closure_is_told_it_receives_the_params():
    opt = make()
    with pytest.raises(TypeError, match=r"receives the params.*def closure\(params\)"):
        opt.step(lambda: 0.0)
    opt.step(lambda p: jnp.sum(p["w"]))  # still usable


def test_loss_backward_in_a_closure_is_told_the_closure_returns_the_loss():
    opt = make()

    def closure(params):
        loss = jnp.sum(params["w"] ** 2)
        loss.backward()
        return loss

    with pytest.raises(AttributeError, match="returns the loss.*drop loss.backward"):
        opt.step(closure)


def test_optax_argument_names_point_to_torchs():
    with pytest.raises(TypeError, match="lr="):
        optim.Adam({"w": jnp.ones(2)}, learning_rate=1e-3)


def test_float64_numpy_params_without_x64_warn():
    with jax.enable_x64(False):
        with pytest.warns(UserWarning, match=r"\['w'\] is float64 but jax_enable_x64 is off"):
            opt = optim.Adam({"w": np.ones(2)})
        assert opt.params["w"].dtype == jnp.float32
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optim.Adam({"w": np.ones(2, np.float32)})  # no warning for float32


def test_a_non_callable_closure_is_named():
    with pytest.raises(TypeError, match="take a closure"):
        make().step(3.0)


@pytest.mark.parametrize("call", ["backward", "zero_grad_and_backward"])
def test_opt_backward_inside_a_closure_is_refused(call):
    opt = make()

    def closure(params):
        if call == "zero_grad_and_backward":
            opt.zero_grad()
        opt.backward(lambda p: jnp.sum(p["w"]))
        return jnp.sum(params["w"] ** 2)

    with pytest.raises(RuntimeError, match=r"opt.backward\(\) was called inside the closure"):
        opt.step(closure)
    opt.step(lambda p: jnp.sum(p["w"] ** 2))  # still usable
