"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), as torch.optim.Rprop computes it."""

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


class RpropState(NamedTuple):
    """torch's Rprop state: the step count, the previous gradient and the step sizes.

    Attributes:
      step: the number of updates made (an int32 scalar).
      prev: :math:`p_t`, the last gradient with the elements whose sign flipped zeroed,
        shaped like the params.
      step_size: :math:`\\Delta_t`, one step size per element, shaped like the params.
    """

    step: jax.Array
    prev: Any
    step_size: Any


def _cast(value: Any, leaf: jax.Array) -> jax.Array:
    """``value`` as a 0-d array of ``leaf``'s dtype, rounded once (as torch writes a scalar)."""
    return jnp.asarray(numerics.like(value, leaf), leaf.dtype)


def scale_by_rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[Any, Any] = (0.5, 1.2),
    step_sizes: tuple[Any, Any] = (1e-6, 50),
) -> GradientTransformation:
    """Rprop's sign-based step with per-element adaptive step sizes, as torch computes it.

    .. math::
        s_t = \\operatorname{sign}(g_t\\, p_{t-1}), \\quad
        \\eta_t = \\begin{cases} \\eta_+ & s_t > 0 \\\\ \\eta_- & s_t < 0 \\\\
            1 & s_t = 0 \\end{cases}, \\quad
        \\Delta_t = \\operatorname{clip}(\\Delta_{t-1} \\eta_t,\\ \\Delta_{min}, \\Delta_{max}),

        p_t = g_t \\,[s_t \\ge 0], \\qquad u_t = -\\operatorname{sign}(p_t)\\, \\Delta_t

    with :math:`\\Delta_0 = \\gamma` and :math:`p_0 = 0`. The output is the full update (it
    already carries the step sizes; no learning rate block follows).

    Args:
      lr: the initial step size :math:`\\gamma`; a schedule is read once, at step 0, since
        torch reads ``lr`` only when it creates the state.
      etas: :math:`(\\eta_-, \\eta_+)`, the multiplicative decrease and increase factors.
      step_sizes: :math:`(\\Delta_{min}, \\Delta_{max})`, the bounds of the step sizes.

    Returns:
      The transform; its state is an :class:`RpropState`.
    """
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes

    def init(params):
        first_lr = numerics.resolve(lr, jnp.zeros([], jnp.int32))
        return RpropState(
            step=jnp.zeros([], jnp.int32),
            prev=jax.tree.map(numerics.zeros_like, params),
            step_size=jax.tree.map(
                lambda p: numerics.zeros_like(p) + _cast(first_lr, p), params
            ),
        )

    def update(updates, state, params=None):
        del params

        def one(g, prev, step_size):
            sign = jnp.sign(g * prev)
            minus = _cast(etaminus, g)
            factor = jnp.where(
                sign > 0, _cast(etaplus, g), jnp.where(sign < 0, minus, jnp.ones_like(g))
            )
            step_size = jnp.clip(
                step_size * factor,
                numerics.like(step_size_min, g),
                numerics.like(step_size_max, g),
            )
            g = jnp.where(factor == minus, jnp.zeros_like(g), g)  # grad[sign.eq(etaminus)] = 0
            return -jnp.sign(g) * step_size, g, step_size

        results = jax.tree.map(one, updates, state.prev, state.step_size)
        new_updates, prev, step_size = jax.tree.transpose(
            jax.tree.structure(updates), None, results
        )
        return new_updates, RpropState(numerics.increment(state.step), prev, step_size)

    return GradientTransformation(init, update)


def rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Rprop: each element steps by its own size against its gradient's sign, adapted by sign.

    Every element moves by its own step size in the direction against its gradient's sign;
    the step size grows while the sign holds and shrinks when it flips. torch.optim.Rprop's
    update, with :math:`g_t = \\nabla f(\\theta_{t-1})`:

    .. math::
        g_t \\leftarrow \\pm g_t, \\quad
        \\eta_t = \\begin{cases} \\eta_+ & g_t p_{t-1} > 0 \\\\ \\eta_- & g_t p_{t-1} < 0 \\\\
            1 & g_t p_{t-1} = 0 \\end{cases}, \\quad
        \\Delta_t = \\operatorname{clip}(\\Delta_{t-1}\\, \\eta_t, \\Delta_{min}, \\Delta_{max}),

        p_t = g_t \\,[g_t p_{t-1} \\ge 0], \\quad
        \\theta_t = \\theta_{t-1} - \\operatorname{sign}(p_t)\\, \\Delta_t

    with :math:`\\Delta_0 = \\gamma` and :math:`p_0 = 0`: where the sign flipped, the step size
    shrinks and the element does not move this step (its stored gradient :math:`p_t` is 0, so
    the next step neither grows nor shrinks it). The sign is :math:`-` with ``maximize``. This
    is torch's variant: the paper's rule without its weight-backtracking (what Igel & Hüsken,
    2000, call iRprop-).

    Args:
      lr: initial step size :math:`\\Delta_0` (read when the state is created).
      etas: :math:`(\\eta_-, \\eta_+)`, with :math:`0 < \\eta_- < 1 < \\eta_+`.
      step_sizes: :math:`(\\Delta_{min}, \\Delta_{max})`.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``prev`` (:math:`p_t`) and
      ``step_size`` (:math:`\\Delta_t`). Complex parameters are treated as (real, imag) pairs,
      as torch does.

    References:
      Riedmiller & Braun, `A Direct Adaptive Method for Faster Backpropagation Learning: The
      RPROP Algorithm <https://citeseerx.ist.psu.edu/viewdoc/summary?doi=10.1.1.21.1417>`_,
      IEEE International Conference on Neural Networks, 1993.
    """
    validation.check_lr(lr)
    if not isinstance(etas, (tuple, list)) or len(etas) != 2:
        raise ValueError(f"Invalid etas: {etas!r} (expected a pair (etaminus, etaplus))")
    message = f"Invalid eta values: {etas[0]}, {etas[1]}"
    validation.require(lambda v: 0.0 < v < 1.0, etas[0], message)
    validation.require(lambda v: 1.0 < v, etas[1], message)
    return view_as_real(
        blocks.descent(scale_by_rprop(lr, etas, step_sizes), None, maximize=maximize)
    )
