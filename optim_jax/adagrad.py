"""Adagrad (Duchi et al., 2011) as torch.optim.Adagrad computes it."""

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


class AdagradState(NamedTuple):
    """torch's Adagrad state: the step count and the running sum of squared gradients.

    Attributes:
      step: the number of updates made (an int32 scalar).
      sum: :math:`s`, the sum of :math:`g^2` since ``initial_accumulator_value``, shaped like
        the params.
    """

    step: jax.Array
    sum: Any


def scale_by_adagrad(
    lr_decay: Any = 0.0,
    initial_accumulator_value: Any = 0.0,
    eps: Any = 1e-10,
    *,
    lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """Adagrad's direction, with torch's learning-rate decay folded in.

    .. math::
        s_t = s_{t-1} + g_t^2 \\ (s_0 = v_0), \\qquad
        u_t = \\frac{1}{1 + (t - 1)\\,\\eta}\\,\\frac{g_t}{\\sqrt{s_t} + \\epsilon}

    Args:
      lr_decay: :math:`\\eta`, the step size at step ``t`` is ``lr / (1 + (t - 1) * lr_decay)``.
      initial_accumulator_value: :math:`v_0`, the starting value of every ``sum`` element.
      eps: :math:`\\epsilon`, added to the square root.
      lr: if given, the block emits the step :math:`-\\gamma u_t` itself, with torch's
        ``clr = lr / (1 + (t - 1) * lr_decay)`` formed as torch forms it (in ``lr``'s dtype
        for an array, torch's tensor lr).

    Returns:
      The block; multiply by ``-lr`` afterwards (:func:`optim_jax.scale_by_learning_rate`),
      unless built with ``lr``.
    """

    def init(params):
        return AdagradState(
            step=jnp.zeros([], jnp.int32),
            sum=jax.tree.map(
                lambda p: numerics.zeros_like(p) + numerics.like(initial_accumulator_value, p),
                params,
            ),
        )

    def update(updates, state, params=None):
        del params
        step = numerics.increment(state.step)
        # torch's addcdiv(grad, std, value=-clr), clr = lr / (1 + (step - 1) * lr_decay)
        scale = numerics.step_scale(
            lr, state.step, 1 + (step.astype(numerics.scalar_dtype()) - 1) * lr_decay
        )
        sums = jax.tree.map(lambda s, g: s + g * g, state.sum, updates)
        updates = jax.tree.map(
            lambda g, s: (g * numerics.like(scale, g)) / (jnp.sqrt(s) + numerics.like(eps, s)),
            updates,
            sums,
        )
        return updates, AdagradState(step, sums)

    return GradientTransformation(init, update)


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Adagrad: per-coordinate step sizes shrinking with the accumulated squared gradients.

    torch.optim.Adagrad's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` (negated when
    ``maximize``) and :math:`s_0` = ``initial_accumulator_value``:

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        s_t = s_{t-1} + g_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\frac{\\gamma}{1 + (t-1)\\eta}
            \\frac{g_t}{\\sqrt{s_t} + \\epsilon}

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      lr_decay: :math:`\\eta`, decay of the learning rate with the step count.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      initial_accumulator_value: starting value :math:`s_0` of the sum of squares.
      eps: :math:`\\epsilon`, added to the denominator.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step`` and ``sum``. Complex parameters are
      treated as (real, imag) pairs, as torch does (each part starts at
      ``initial_accumulator_value``).

    References:
      Duchi, Hazan & Singer, `Adaptive Subgradient Methods for Online Learning and Stochastic
      Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, JMLR 12, 2011.
    """
    validation.check_lr(lr)
    validation.require(lambda v: v >= 0.0, lr_decay, f"Invalid lr_decay value: {lr_decay}")
    validation.check_weight_decay(weight_decay)
    validation.require(
        lambda v: v >= 0.0,
        initial_accumulator_value,
        f"Invalid initial_accumulator_value value: {initial_accumulator_value}",
    )
    validation.check_eps(eps)
    return view_as_real(blocks.descent(
        scale_by_adagrad(lr_decay, initial_accumulator_value, eps, lr=lr),
        lr,
        weight_decay,
        maximize=maximize,
        lr_in_core=True,
    ))
