"""Adamax (Kingma & Ba, 2015, section 7): Adam with an infinity norm, as torch.optim.Adamax."""

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


class AdamaxState(NamedTuple):
    """torch's Adamax state: the step count, the first moment and the infinity norm.

    Attributes:
      step: the number of updates made (an int32 scalar).
      exp_avg: :math:`m`, the first moment, shaped like the params.
      exp_inf: :math:`u`, the exponentially weighted infinity norm, shaped like the params.
    """

    step: jax.Array
    exp_avg: Any
    exp_inf: Any


def scale_by_adamax(
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    *,
    lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """Adamax's bias-corrected ratio of the first moment to the infinity norm.

    .. math::
        m_t = \\operatorname{lerp}(m_{t-1}, g_t, 1 - \\beta_1), \\quad
        u_t = \\max(\\beta_2 u_{t-1}, |g_t| + \\epsilon), \\quad
        d_t = \\frac{m_t}{(1 - \\beta_1^t)\\, u_t}

    Args:
      betas: :math:`(\\beta_1, \\beta_2)`, decays of the first moment and the infinity norm.
      eps: :math:`\\epsilon`, added to :math:`|g_t|` (so :math:`u_t > 0`).
      lr: if given, the block emits the step :math:`-\\gamma d_t` itself, with torch's
        ``clr = lr / (1 - beta1**t)`` formed as torch forms it (in ``lr``'s dtype for an
        array, torch's tensor lr).

    Returns:
      The block, emitting :math:`d_t` (multiply by ``-lr`` afterwards) or, with ``lr``, the
      step.
    """
    beta1, beta2 = betas

    def init(params):
        zeros = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
        return AdamaxState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        step = numerics.increment(state.step)
        exp_avg = jax.tree.map(lambda m, g: numerics.lerp(m, g, 1 - beta1), state.exp_avg, updates)

        def infinity_norm(u, g):
            return jnp.maximum(u * numerics.like(beta2, u), jnp.abs(g) + numerics.like(eps, g))

        exp_inf = jax.tree.map(infinity_norm, state.exp_inf, updates)
        # torch's addcdiv(exp_avg, exp_inf, value=-clr)
        scale = numerics.step_scale(lr, state.step, numerics.bias_correction(beta1, step))
        updates = jax.tree.map(lambda m, u: (m * numerics.like(scale, m)) / u, exp_avg, exp_inf)
        return updates, AdamaxState(step, exp_avg, exp_inf)

    return GradientTransformation(init, update)


def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Adamax: Adam whose second moment is replaced by an exponentially weighted infinity norm.

    torch.optim.Adamax's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` (negated when
    ``maximize``) and :math:`m_0 = u_0 = 0`:

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        u_t = \\max(\\beta_2 u_{t-1}, |g_t| + \\epsilon),

        \\theta_t = \\theta_{t-1} - \\frac{\\gamma}{1-\\beta_1^t} \\frac{m_t}{u_t}

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decays of the first moment and the infinity norm.
      eps: :math:`\\epsilon`, added to :math:`|g_t|`.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``exp_avg`` (:math:`m`) and
      ``exp_inf`` (:math:`u`). Complex parameters are treated as (real, imag) pairs, as torch
      does.

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015, section 7.1. torch (and this function)
      add :math:`\\epsilon` inside the maximum, which the paper does not have.
    """
    validation.check_adam_family(lr, betas, eps, weight_decay)
    return view_as_real(blocks.descent(
        scale_by_adamax(betas, eps, lr=lr), lr, weight_decay, maximize=maximize, lr_in_core=True
    ))
