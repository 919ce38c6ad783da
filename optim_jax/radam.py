"""RAdam (Liu et al., 2020): Adam with its variance rectified, as torch.optim.RAdam computes it."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import blocks, numerics, validation
from optim_jax.adam import AdamState, scale_by_adam
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.combine import view_as_real

# B_2k / (2k)!, k = 1..7: y / expm1(y) = 1 - y/2 + sum_k B_2k y^2k / (2k)!.
_BERNOULLI_TERMS = tuple(
    b / math.factorial(2 * k + 2)
    for k, b in enumerate((1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6))
)
_SERIES_LIMIT = 0.5  # the series is used below it: truncation < 1e-16, direct form < 3e-7 (f32)


def _one_minus_bernoulli(y: jax.Array) -> jax.Array:
    """``1 - y / expm1(y)`` for ``y >= 0``, to a few ulps relative (a series near 0)."""
    small = jnp.minimum(y, _SERIES_LIMIT)
    squared = small * small
    tail = 0.0
    for coefficient in reversed(_BERNOULLI_TERMS):
        tail = tail * squared + coefficient
    series = small / 2 - squared * tail
    large = jnp.clip(y, _SERIES_LIMIT, 100.0)  # 100: the value is 1 to rounding, avoid inf/inf
    return jnp.where(y < _SERIES_LIMIT, series, 1 - large / jnp.expm1(large))


def sma_lengths(beta2: Any, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """RAdam's :math:`\\rho_\\infty` and :math:`\\rho_t`, the lengths of the approximated SMA.

    .. math::
        \\rho_\\infty = \\frac{2}{1 - \\beta_2} - 1, \\qquad
        \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1 - \\beta_2^t}
            = 1 + \\frac{2}{L}\\big(\\psi(tL) - \\psi(L)\\big),

    with :math:`L = -\\log \\beta_2` and :math:`\\psi(y) = 1 - y / (e^y - 1)`. The first form,
    torch's, subtracts two numbers near :math:`2 / (1 - \\beta_2)` (2000 for 0.999) to get one
    near :math:`t`, which float32 cannot do to better than about 1e-2; the second has no such
    cancellation, so float32 runs track torch's float64 host arithmetic.
    """
    dtype = numerics.scalar_dtype()
    value = validation.concrete(beta2)
    if value is not None:
        with np.errstate(divide="ignore"):
            rate = jnp.asarray(-np.log(np.float64(value)), dtype)
        rho_inf = jnp.asarray(2 / (1 - value) - 1, dtype)
    else:
        beta2 = jnp.asarray(beta2, dtype)
        rate = -jnp.log1p(-(1 - beta2))  # 1 - beta2 is exact for beta2 >= 0.5
        rho_inf = 2 / (1 - beta2) - 1
    rho_t = 1 + 2 / rate * (
        _one_minus_bernoulli(step.astype(dtype) * rate) - _one_minus_bernoulli(rate)
    )
    return rho_inf, rho_t


class RAdamState(NamedTuple):
    """torch's RAdam state: the step count and Adam's two moments (no AMSGrad maximum).

    Attributes:
      step: :math:`t`, the number of updates made (an int32 scalar).
      exp_avg: :math:`m_t`, the first moment, shaped like the params.
      exp_avg_sq: :math:`v_t`, the second moment, shaped like the params.
    """

    step: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_radam(
    betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8
) -> GradientTransformation:
    """RAdam's direction: Adam's moments, rectified once the variance estimate is tractable.

    .. math::
        \\hat m_t = \\frac{m_t}{1 - \\beta_1^t}, \\quad
        d_t = \\begin{cases}
            \\hat m_t \\, r_t \\dfrac{\\sqrt{1 - \\beta_2^t}}{\\sqrt{v_t} + \\epsilon}
                & \\rho_t > 5 \\\\
            \\hat m_t & \\text{otherwise}
        \\end{cases}, \\quad
        r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}
            {(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}

    with Adam's moments :math:`m_t, v_t` (:func:`optim_jax.scale_by_adam`'s) and
    :math:`\\rho_\\infty, \\rho_t` from :func:`sma_lengths`.

    Args:
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to :math:`\\sqrt{v_t}`.

    Returns:
      The block, emitting :math:`d_t`; multiply by ``-lr`` afterwards.
    """
    beta1, beta2 = betas
    adam = scale_by_adam(betas, eps)  # for its moments (its ratio is unused)

    def init(params):
        return RAdamState(*adam.init(params)[:3])

    def update(updates, state, params=None):
        del params
        _, moments = adam.update(updates, AdamState(*state, None))
        state = RAdamState(*moments[:3])
        correction1 = numerics.bias_correction(beta1, state.step)
        correction2 = numerics.bias_correction(beta2, state.step)
        rho_inf, rho_t = sma_lengths(beta2, state.step)
        rectified = rho_t > 5.0
        # Off the rectified branch, 6s keep the unused factor finite (and its gradient too).
        rho_t, rho_inf = jnp.where(rectified, rho_t, 6.0), jnp.where(rectified, rho_inf, 6.0)
        rect = jnp.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )

        def direction(m, v):
            corrected = m / numerics.like(correction1, m)
            adaptive = numerics.like(jnp.sqrt(correction2), v) / (
                jnp.sqrt(v) + numerics.like(eps, v)
            )
            return jnp.where(rectified, corrected * adaptive * numerics.like(rect, m), corrected)

        return jax.tree.map(direction, state.exp_avg, state.exp_avg_sq), state

    return GradientTransformation(init, update)


def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """RAdam: Adam with its adaptive step rectified, and off while its variance is intractable.

    Until the second-moment estimate's variance is tractable (:math:`\\rho_t > 5`) the step is
    plain bias-corrected momentum; then the adaptive step, scaled by the rectification
    :math:`r_t`. torch.optim.RAdam's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` and
    :math:`m_0 = v_0 = 0`:

    .. math::
        g_t \\leftarrow \\pm g_t \\, [+ \\lambda \\theta_{t-1}], \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,

        \\theta_t = \\theta_{t-1} \\, [- \\gamma \\lambda \\theta_{t-1}]
            - \\gamma \\frac{m_t}{1 - \\beta_1^t} \\cdot
            \\begin{cases}
                r_t \\sqrt{1 - \\beta_2^t} / (\\sqrt{v_t} + \\epsilon) & \\rho_t > 5 \\\\
                1 & \\text{otherwise}
            \\end{cases}

        \\rho_\\infty = \\frac{2}{1 - \\beta_2} - 1, \\quad
        \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1 - \\beta_2^t}, \\quad
        r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}
            {(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}

    The sign is :math:`-` with ``maximize``. The :math:`\\lambda` term goes on the gradient
    (L2 penalty, the default) or, with ``decoupled_weight_decay``, on the weights (as AdamW),
    never both; it is left out when ``weight_decay`` is 0. :math:`\\rho_t` is evaluated in a
    form free of cancellation (:func:`sma_lengths`), equal to this one in exact arithmetic.

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to :math:`\\sqrt{v_t}`.
      weight_decay: :math:`\\lambda`; an L2 penalty on the gradient, or decoupled decay
        ``theta *= 1 - lr * weight_decay`` when ``decoupled_weight_decay``.
      decoupled_weight_decay: decay the weights directly, as AdamW does.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``exp_avg`` and ``exp_avg_sq``. Complex
      parameters are treated as (real, imag) pairs, as torch does.

    References:
      Liu, Jiang, He, Chen, Liu, Gao & Han, `On the Variance of the Adaptive Learning Rate and
      Beyond <https://arxiv.org/abs/1908.03265>`_, ICLR 2020.
    """
    validation.check_adam_family(lr, betas, eps, weight_decay)
    return view_as_real(blocks.descent(
        scale_by_radam(betas, eps),
        lr,
        weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    ))
