"""Adam (Kingma & Ba, 2015) as torch.optim.Adam computes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import blocks, numerics, validation
from optim_jax.base import GradientTransformation, GradientTransformationExtraArgs, ScalarOrSchedule
from optim_jax.combine import view_as_real


class AdamState(NamedTuple):
    """torch's Adam state: the step count, the two moments and the AMSGrad maximum.

    Attributes:
      step: :math:`t`, the number of updates made (an int32 scalar).
      exp_avg: :math:`m_t`, the first moment, shaped like the params.
      exp_avg_sq: :math:`v_t`, the second moment, shaped like the params.
      max_exp_avg_sq: the running maximum of :math:`v_t`; ``None`` (no leaves) unless
        ``amsgrad``.
    """

    step: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def inverse_bias_correction_sqrt(beta2: Any, count: jax.Array) -> jax.Array:
    """``1 / sqrt(1 - beta2**count)``: Adam multiplies ``sqrt(v)`` by it.

    torch divides by ``sqrt(1 - beta2**t)``. XLA turns a division by a broadcast scalar into a
    multiply by its reciprocal in some programs and not in others, so the rounding would depend
    on the rest of the program; the multiply is written out (behind an optimisation barrier, so
    that no rewrite reaches through it) and every program rounds alike, within an ulp of torch.
    """
    return jax.lax.optimization_barrier(1 / jnp.sqrt(numerics.bias_correction(beta2, count)))


def scale_by_adam(
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    amsgrad: bool = False,
    *,
    lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """Adam's bias-corrected moment ratio (Kingma & Ba, 2015), as torch computes it.

    .. math::
        m_t = \\operatorname{lerp}(m_{t-1}, g_t, 1 - \\beta_1), \\quad
        v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2, \\quad
        u_t = \\frac{m_t / (1 - \\beta_1^t)}{\\sqrt{\\hat v_t} / \\sqrt{1 - \\beta_2^t} + \\epsilon}

    with :math:`\\hat v_t = \\max(\\hat v_{t-1}, v_t)` under AMSGrad, else :math:`v_t`. The
    learning rate is applied by the next block.

    Args:
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to the denominator after the bias correction.
      amsgrad: divide by the running maximum of :math:`v_t`.
      lr: if given (a float, array or schedule), the block emits torch's step
        :math:`-\\gamma u_t` itself, with torch's ``step_size = lr / (1 - beta1**t)`` formed
        as torch forms it (in ``lr``'s dtype for an array, torch's tensor lr).

    Returns:
      The block, emitting :math:`u_t` (multiply by ``-lr`` afterwards,
      :func:`scale_by_learning_rate`) or, with ``lr``, the step; its state is an
      :class:`AdamState`.
    """
    beta1, beta2 = betas

    def init(params):
        zeros = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
        return AdamState(
            step=jnp.zeros([], jnp.int32),
            exp_avg=zeros(),
            exp_avg_sq=zeros(),
            max_exp_avg_sq=zeros() if amsgrad else None,
        )

    def update(updates, state, params=None):
        del params
        step = numerics.increment(state.step)
        correction1 = numerics.bias_correction(beta1, step)
        inverse_correction2_sqrt = inverse_bias_correction_sqrt(beta2, step)
        exp_avg = jax.tree.map(
            lambda m, g: numerics.lerp(m, g, 1 - beta1), state.exp_avg, updates
        )
        exp_avg_sq = jax.tree.map(
            lambda v, g: v * numerics.like(beta2, v) + numerics.like(1 - beta2, g) * g * g,
            state.exp_avg_sq,
            updates,
        )
        if amsgrad:
            max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_exp_avg_sq
        else:
            max_exp_avg_sq, second = None, exp_avg_sq

        # one scalar division, not one per element: torch's addcdiv(m, denom, -step_size)
        scale = numerics.step_scale(lr, state.step, correction1)

        def ratio(m, v):
            denom = jnp.sqrt(v) * numerics.like(inverse_correction2_sqrt, v) + numerics.like(eps, v)
            return (m * numerics.like(scale, m)) / denom

        updates = jax.tree.map(ratio, exp_avg, second)
        return updates, AdamState(step, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return GradientTransformation(init, update)


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransformationExtraArgs:
    """Adam, with torch's weight decay (L2 or decoupled), AMSGrad and maximize options.

    torch.optim.Adam's update, with :math:`g_t = \\nabla f(\\theta_{t-1})`:

    .. math::
        g_t \\leftarrow \\pm g_t \\, [+ \\lambda \\theta_{t-1}], \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,

        \\hat v_t = \\max(\\hat v_{t-1}, v_t) \\ (\\text{amsgrad}) \\ \\text{or} \\ v_t, \\quad
        \\theta_t = \\theta_{t-1} \\, [- \\gamma \\lambda \\theta_{t-1}]
            - \\frac{\\gamma}{1-\\beta_1^t}
            \\frac{m_t}{\\sqrt{\\hat v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    from :math:`m_0 = v_0 = \\hat v_0 = 0`. The sign is :math:`-` with ``maximize``. The
    :math:`\\lambda` term goes on the gradient (torch's L2 penalty, the default) or, with
    ``decoupled_weight_decay``, on the weights (decoupled decay, :func:`adamw`), never both; it
    is left out when ``weight_decay`` is 0. :math:`m_t` is computed as torch's
    ``lerp(m, g, 1 - beta1)``, and :math:`\\epsilon` is added after the bias correction of
    :math:`\\sqrt{\\hat v_t}`, as in torch (Kingma & Ba add it to
    :math:`\\sqrt{v_t / (1 - \\beta_2^t)}`, the same thing).

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates, each in
        ``[0, 1)``.
      eps: :math:`\\epsilon`, added to the denominator.
      weight_decay: :math:`\\lambda`; an L2 penalty on the gradient, or AdamW's decoupled decay
        ``theta *= 1 - lr * weight_decay`` when ``decoupled_weight_decay``.
      amsgrad: divide by the running maximum :math:`\\hat v_t` of :math:`v_t` (AMSGrad).
      maximize: maximise the objective instead of minimising it.
      decoupled_weight_decay: decay the weights directly, as :func:`adamw` does.

    Returns:
      The transform; its state holds torch's ``step``, ``exp_avg`` (:math:`m`),
      ``exp_avg_sq`` (:math:`v`) and, with AMSGrad, ``max_exp_avg_sq`` (:math:`\\hat v`).
      Complex parameters are treated as (real, imag) pairs, as torch does.

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018 (AMSGrad).

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019 (``decoupled_weight_decay``).

    Example:
      >>> import jax.numpy as jnp
      >>> import optim_jax
      >>> tx = optim_jax.adam(lr=0.1)
      >>> params = {'w': jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({'w': jnp.array([0.5, -3.0])}, state, params)
      >>> print(optim_jax.apply_updates(params, updates)['w'].round(4))  # lr * sign(g)
      [ 0.9 -1.9]
    """
    validation.check_adam_family(lr, betas, eps, weight_decay)
    validation.check_beta_kinds(betas)
    return view_as_real(blocks.descent(
        scale_by_adam(betas, eps, amsgrad, lr=lr), lr, weight_decay,
        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay, lr_in_core=True,
    ))
