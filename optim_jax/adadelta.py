"""Adadelta (Zeiler, 2012) as torch.optim.Adadelta computes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import blocks, numerics, validation
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.combine import view_as_real


class AdadeltaState(NamedTuple):
    """torch's Adadelta state: running averages of squared gradients and of squared steps.

    Attributes:
      step: the number of updates made (an int32 scalar).
      square_avg: :math:`v`, the running average of :math:`g^2`, shaped like the params.
      acc_delta: :math:`u`, the running average of :math:`\\Delta^2`, shaped like the params.
    """

    step: jax.Array
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> GradientTransformation:
    """Adadelta's direction: the gradient rescaled by the ratio of RMS step to RMS gradient.

    .. math::
        v_t = \\rho v_{t-1} + (1 - \\rho) g_t^2, \\quad
        \\Delta_t = \\frac{\\sqrt{u_{t-1} + \\epsilon}}{\\sqrt{v_t + \\epsilon}}\\, g_t, \\quad
        u_t = \\rho u_{t-1} + (1 - \\rho) \\Delta_t^2

    Args:
      rho: :math:`\\rho`, the decay of both running averages.
      eps: :math:`\\epsilon`, added inside both square roots.

    Returns:
      The block, emitting :math:`\\Delta_t`; multiply by ``-lr`` afterwards.
    """

    def average(avg, x):
        return avg * numerics.like(rho, avg) + numerics.like(1 - rho, x) * x * x

    def init(params):
        zeros = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
        return AdadeltaState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        square_avg = jax.tree.map(average, state.square_avg, updates)

        def delta(g, v, u):
            std = jnp.sqrt(v + numerics.like(eps, v))
            return jnp.sqrt(u + numerics.like(eps, u)) / std * g

        deltas = jax.tree.map(delta, updates, square_avg, state.acc_delta)
        acc_delta = jax.tree.map(average, state.acc_delta, deltas)
        return deltas, AdadeltaState(numerics.increment(state.step), square_avg, acc_delta)

    return GradientTransformation(init, update)


def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Adadelta: steps scaled by the ratio of running RMS of past steps to that of gradients.

    torch.optim.Adadelta's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` (negated when
    ``maximize``) and :math:`v_0 = u_0 = 0`:

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        v_t = \\rho v_{t-1} + (1 - \\rho) g_t^2, \\quad
        \\Delta_t = \\frac{\\sqrt{u_{t-1} + \\epsilon}}{\\sqrt{v_t + \\epsilon}}\\, g_t,

        u_t = \\rho u_{t-1} + (1 - \\rho) \\Delta_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\gamma \\Delta_t

    Args:
      lr: learning rate :math:`\\gamma` scaling :math:`\\Delta_t` (default 1.0, as in torch), a
        float or a schedule ``step -> lr``.
      rho: :math:`\\rho`, decay of the running averages, in ``[0, 1]``.
      eps: :math:`\\epsilon`, added inside the square roots.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``square_avg`` (:math:`v`) and
      ``acc_delta`` (:math:`u`). Complex parameters are treated as (real, imag) pairs, as torch
      does.

    References:
      Zeiler, `ADADELTA: An Adaptive Learning Rate Method
      <https://arxiv.org/abs/1212.5701>`_, 2012 (which has no learning rate: :math:`\\gamma = 1`).
    """
    validation.check_lr(lr)
    validation.require(lambda v: 0.0 <= v <= 1.0, rho, f"Invalid rho value: {rho}")
    validation.check_eps(eps)
    validation.check_weight_decay(weight_decay)
    return view_as_real(blocks.descent(scale_by_adadelta(rho, eps), lr, weight_decay, maximize=maximize))
