"""Averaged SGD (Polyak & Juditsky, 1992) as torch.optim.ASGD computes it."""

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

# torch keeps eta and mu in tensors of its default dtype (float32) whatever the params' dtype,
# and reads them back from there: float64 params then step with float32-rounded etas.
_SCALAR_STATE_DTYPE = jnp.float32


class ASGDState(NamedTuple):
    """torch's ASGD state: step count, step size, averaging weight and averaged parameters.

    ``eta`` and ``mu`` are float32 scalars shared by the group (torch keeps one per parameter,
    all equal, in its default dtype).

    Attributes:
      step: :math:`t`, the number of updates made (an int32 scalar).
      eta: :math:`\\eta_t`, the step size of the next update.
      mu: :math:`\\mu_t`, the averaging weight of the next update.
      ax: :math:`\\bar\\theta_t`, the averaged parameters, shaped like the params.
    """

    step: jax.Array
    eta: jax.Array
    mu: jax.Array
    ax: Any


def scale_by_asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
) -> GradientTransformation:
    """ASGD's decayed step and the running average of the iterates.

    .. math::
        \\theta_t = \\theta_{t-1} (1 - \\lambda \\eta_{t-1}) - \\eta_{t-1} g_t, \\quad
        \\bar\\theta_t = \\bar\\theta_{t-1} + \\mu_{t-1} (\\theta_t - \\bar\\theta_{t-1}),

        \\eta_t = \\frac{\\gamma}{(1 + \\lambda \\gamma t)^\\alpha}, \\quad
        \\mu_t = \\frac{1}{\\max(1, t - t_0)}

    with :math:`\\eta_0 = \\gamma` and :math:`\\mu_0 = 1` (:math:`\\mu = 1` copies
    :math:`\\theta_t`). This block applies the step size itself and emits
    :math:`\\theta_t - \\theta_{t-1}`, so it goes last in a chain, and :math:`\\bar\\theta`
    (``ax``) averages the parameters that ``apply_updates`` then produces. Like torch, the
    first step uses the learning rate of that step (a schedule's value at 0, or the current
    array), not the one at ``init``.

    Args:
      lr: :math:`\\gamma`, a float or a schedule ``step -> lr``.
      lambd: :math:`\\lambda`, the decay term.
      alpha: :math:`\\alpha`, the power of the step-size decay.
      t0: :math:`t_0`, the step after which averaging starts.

    Returns:
      The block; its state holds torch's ``step``, ``eta``, ``mu`` and ``ax``. It needs the
      params.
    """
    scalars = numerics.scalar_dtype

    def init(params):
        return ASGDState(
            step=jnp.zeros([], jnp.int32),
            eta=jnp.asarray(numerics.resolve(lr, jnp.zeros([], jnp.int32)), _SCALAR_STATE_DTYPE),
            mu=jnp.ones([], _SCALAR_STATE_DTYPE),
            ax=jax.tree.map(numerics.zeros_like, params),
        )

    def update(updates, state, params=None):
        blocks.require_params(params, "scale_by_asgd")
        step_lr = numerics.resolve(lr, state.step)
        first = jnp.asarray(step_lr, _SCALAR_STATE_DTYPE)  # torch's lazy init: eta = lr
        eta = jnp.where(state.step == 0, first, state.eta).astype(scalars())
        shrink = 1 - lambd * eta

        def new_param(g, p):
            return p * numerics.like(shrink, p) + numerics.like(-eta, g) * g

        new_params = jax.tree.map(new_param, updates, params)
        averaging = state.mu != 1  # mu == 1 copies the params, as torch's branch does

        def average(ax, p):
            return jnp.where(averaging, ax + (p - ax) * numerics.like(state.mu, ax), p)

        ax = jax.tree.map(average, state.ax, new_params)
        step = numerics.increment(state.step)
        t = step.astype(scalars())
        # torch's lr / ((1 + lambd * lr * step) ** alpha): host floats for a float lr, in the
        # lr's dtype for an array (torch's tensor lr). The barrier keeps XLA from rewriting
        # x / y**alpha as x * y**-alpha, which rounds differently.
        operand = lambda value: numerics.lr_operand(value, step_lr)  # noqa: E731
        power = (1 + operand(lambd) * step_lr * operand(t)) ** operand(alpha)
        next_eta = step_lr / jax.lax.optimization_barrier(power)
        next_mu = 1 / jnp.maximum(1, t - t0)
        updates = jax.tree.map(jnp.subtract, new_params, params)
        return updates, ASGDState(
            step,
            jnp.asarray(next_eta, _SCALAR_STATE_DTYPE),
            jnp.asarray(next_mu, _SCALAR_STATE_DTYPE),
            ax,
        )

    return GradientTransformation(init, update)


def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Averaged SGD: SGD with a decaying step size, keeping the average of the iterates.

    torch.optim.ASGD's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` (negated when
    ``maximize``):

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda_w \\theta_{t-1}, \\quad
        \\theta_t = \\theta_{t-1} (1 - \\lambda \\eta_{t-1}) - \\eta_{t-1} g_t, \\quad
        \\bar\\theta_t = \\bar\\theta_{t-1} + \\mu_{t-1} (\\theta_t - \\bar\\theta_{t-1}),

        \\eta_t = \\frac{\\gamma}{(1 + \\lambda \\gamma t)^\\alpha}, \\quad
        \\mu_t = \\frac{1}{\\max(1, t - t_0)}, \\quad \\eta_0 = \\gamma, \\ \\mu_0 = 1

    The averaged parameters :math:`\\bar\\theta` are the state's ``ax`` (``opt.state[i]['ax']``
    in the stateful class): for an integer :math:`t_0`, :math:`\\bar\\theta_t` is
    :math:`\\theta_t` up to step :math:`t_0 + 2` and the mean of
    :math:`\\theta_{t_0 + 2}, \\dots, \\theta_t` after it.

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      lambd: :math:`\\lambda`, the decay term.
      alpha: :math:`\\alpha`, the power of the step-size decay.
      t0: :math:`t_0`, the step at which averaging starts.
      weight_decay: L2 penalty :math:`\\lambda_w` added to the gradient.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``eta``, ``mu`` (float32 scalars, as
      torch keeps them) and ``ax``. Complex parameters need no special treatment: the update is
      linear in the parameters and gradients.

    References:
      Polyak & Juditsky, `Acceleration of Stochastic Approximation by Averaging
      <https://doi.org/10.1137/0330046>`_, SIAM Journal on Control and Optimization 30(4),
      1992.

      Xu, `Towards Optimal One Pass Large Scale Learning with Averaged Stochastic Gradient
      Descent <https://arxiv.org/abs/1107.2490>`_, 2011 (the step-size decay
      :math:`\\gamma (1 + \\lambda \\gamma t)^{-\\alpha}`).
    """
    validation.check_lr(lr)
    validation.check_weight_decay(weight_decay)
    return blocks.descent(scale_by_asgd(lr, lambd, alpha, t0), None, weight_decay, maximize=maximize)
