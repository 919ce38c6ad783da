"""NAdam (Dozat, 2016): Adam with Nesterov momentum, as torch.optim.NAdam computes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import blocks, numerics, validation
from optim_jax.adam import AdamState, scale_by_adam
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.combine import view_as_real

# torch keeps mu_product in a tensor of its default dtype (float32) whatever the params' dtype
# and multiplies it there, so its rounding is part of torch's float64 trajectories too.
_SCALAR_STATE_DTYPE = jnp.float32


class NAdamState(NamedTuple):
    """torch's NAdam state: the step count, the momentum product and Adam's two moments.

    Attributes:
      step: :math:`t`, the number of updates made (an int32 scalar).
      mu_product: :math:`\\Pi_t = \\prod_{s \\le t} \\mu_s`, a float32 scalar (torch keeps it in
        its default dtype).
      exp_avg: :math:`m_t`, the first moment, shaped like the params.
      exp_avg_sq: :math:`v_t`, the second moment, shaped like the params.
    """

    step: jax.Array
    mu_product: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_nadam(
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    momentum_decay: Any = 4e-3,
    *,
    lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """NAdam's direction: Adam's moments with a Nesterov look-ahead on a momentum schedule.

    .. math::
        \\mu_t = \\beta_1 \\left(1 - \\tfrac12\\, 0.96^{t \\psi}\\right), \\quad
        \\Pi_t = \\prod_{s \\le t} \\mu_s, \\quad
        d_t = \\frac{1 - \\mu_t}{1 - \\Pi_t} \\frac{g_t}{D_t}
            + \\frac{\\mu_{t+1}}{1 - \\Pi_t \\mu_{t+1}} \\frac{m_t}{D_t}

    with Adam's moments :math:`m_t, v_t` (:func:`optim_jax.scale_by_adam`'s) and
    :math:`D_t = \\sqrt{v_t / (1 - \\beta_2^t)} + \\epsilon`.

    Args:
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to the denominator.
      momentum_decay: :math:`\\psi`, how fast :math:`\\mu_t` rises to :math:`\\beta_1`.
      lr: if given, the block emits the step :math:`-\\gamma d_t` itself, with torch's two
        step sizes ``-lr * (1 - mu) / (1 - mu_product)`` and ``-lr * mu_next / (1 -
        mu_product * mu_next)`` formed as torch forms them (in ``lr``'s dtype for an array,
        torch's tensor lr).

    Returns:
      The block, emitting :math:`d_t` (multiply by ``-lr`` afterwards) or, with ``lr``, the
      step.
    """
    beta1, beta2 = betas
    adam = scale_by_adam(betas, eps)  # for its moments (its ratio is unused)

    def init(params):
        step, exp_avg, exp_avg_sq, _ = adam.init(params)
        return NAdamState(step, jnp.ones([], _SCALAR_STATE_DTYPE), exp_avg, exp_avg_sq)

    def update(updates, state, params=None):
        del params
        adam_state = AdamState(state.step, state.exp_avg, state.exp_avg_sq, None)
        _, moments = adam.update(updates, adam_state)
        t = moments.step.astype(numerics.scalar_dtype())
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * momentum_decay)))
        mu_product = state.mu_product * mu.astype(_SCALAR_STATE_DTYPE)
        product = mu_product.astype(mu.dtype)
        # torch's two addcdiv values, lr first: (-lr * (1 - mu)) / (1 - mu_product), ...
        grad_weight = numerics.step_scale(lr, state.step, 1.0 - product, 1.0 - mu)
        avg_weight = numerics.step_scale(lr, state.step, 1.0 - product * mu_next, mu_next)
        correction2 = numerics.bias_correction(beta2, moments.step)

        def direction(g, m, v):
            denom = jnp.sqrt(v / numerics.like(correction2, v)) + numerics.like(eps, v)
            return (
                numerics.like(grad_weight, g) * g / denom
                + numerics.like(avg_weight, m) * m / denom
            )

        step, exp_avg, exp_avg_sq, _ = moments
        updates = jax.tree.map(direction, updates, exp_avg, exp_avg_sq)
        return updates, NAdamState(step, mu_product, exp_avg, exp_avg_sq)

    return GradientTransformation(init, update)


def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """NAdam: Adam whose momentum step looks ahead, Nesterov-style, on a rising momentum schedule.

    torch.optim.NAdam's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` and
    :math:`m_0 = v_0 = 0`, :math:`\\Pi_0 = 1`:

    .. math::
        g_t \\leftarrow \\pm g_t \\, [+ \\lambda \\theta_{t-1}], \\quad
        \\mu_t = \\beta_1 \\left(1 - \\tfrac12\\, 0.96^{t \\psi}\\right), \\quad
        \\Pi_t = \\prod_{s \\le t} \\mu_s,

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        D_t = \\sqrt{v_t / (1 - \\beta_2^t)} + \\epsilon,

        \\theta_t = \\theta_{t-1} \\, [- \\gamma \\lambda \\theta_{t-1}]
            - \\gamma \\left(\\frac{1 - \\mu_t}{1 - \\Pi_t} \\frac{g_t}{D_t}
            + \\frac{\\mu_{t+1}}{1 - \\Pi_t \\mu_{t+1}} \\frac{m_t}{D_t}\\right)

    The sign is :math:`-` with ``maximize``. The :math:`\\lambda` term goes on the gradient
    (L2 penalty, the default) or, with ``decoupled_weight_decay``, on the weights (NAdamW),
    never both; it is left out when ``weight_decay`` is 0.

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to the denominator.
      weight_decay: :math:`\\lambda`; an L2 penalty on the gradient, or decoupled decay
        ``theta *= 1 - lr * weight_decay`` (NAdamW) when ``decoupled_weight_decay``.
      momentum_decay: :math:`\\psi`, the momentum schedule's rate.
      decoupled_weight_decay: decay the weights directly, as AdamW does.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``mu_product`` (a float32 scalar, as
      torch keeps it), ``exp_avg`` and ``exp_avg_sq``. Complex parameters are treated as
      (real, imag) pairs, as torch does.

    References:
      Dozat, `Incorporating Nesterov Momentum into Adam
      <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR 2016 workshop.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019 (``decoupled_weight_decay``).
    """
    validation.check_adam_family(lr, betas, eps, weight_decay)
    validation.require(
        lambda v: v >= 0.0, momentum_decay, f"Invalid momentum_decay value: {momentum_decay}"
    )
    return view_as_real(blocks.descent(
        scale_by_nadam(betas, eps, momentum_decay, lr=lr),
        lr,
        weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        lr_in_core=True,
    ))
