"""RMSprop (Hinton, 2012; centred form: Graves, 2013) as torch.optim.RMSprop computes it."""

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
from optim_jax.combine import chain, view_as_real
from optim_jax.numerics import is_static_zero


class RMSpropState(NamedTuple):
    """torch's RMSprop state: the step count, the mean square and, centred, the mean gradient.

    Attributes:
      step: the number of updates made (an int32 scalar). With momentum, the momentum block's
        ``step`` counts the same updates; torch's state view shows one ``step``.
      square_avg: :math:`v_t`, the running mean of :math:`g^2`, shaped like the params.
      grad_avg: :math:`\\bar g_t`, the running mean of :math:`g`, shaped like the params;
        ``None`` unless ``centered``.
    """

    step: jax.Array | None
    square_avg: Any
    grad_avg: Any


def scale_by_rms(
    alpha: Any = 0.99, eps: Any = 1e-8, centered: bool = False
) -> GradientTransformation:
    """Divides by the root of a running mean of squared gradients, as torch's RMSprop does.

    .. math::
        v_t = \\alpha v_{t-1} + (1 - \\alpha) g_t^2, \\quad
        \\bar g_t = \\operatorname{lerp}(\\bar g_{t-1}, g_t, 1 - \\alpha), \\quad
        u_t = \\frac{g_t}{\\sqrt{v_t - \\bar g_t^2} + \\epsilon}

    where the :math:`\\bar g_t^2` term is present only when ``centered``.

    Args:
      alpha: smoothing constant :math:`\\alpha` of the running means.
      eps: :math:`\\epsilon`, added to the root.
      centered: subtract the squared running mean of the gradient (an estimate of its variance).

    Returns:
      The transform; its state is an :class:`RMSpropState`.
    """

    def init(params):
        zeros = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
        return RMSpropState(
            step=jnp.zeros([], jnp.int32),
            square_avg=zeros(),
            grad_avg=zeros() if centered else None,
        )

    def update(updates, state, params=None):
        del params
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        square_avg = jax.tree.map(
            lambda v, g: v * numerics.like(alpha, v) + numerics.like(1 - alpha, g) * g * g,
            state.square_avg,
            updates,
        )
        if centered:
            grad_avg = jax.tree.map(
                lambda m, g: numerics.lerp(m, g, 1 - alpha), state.grad_avg, updates
            )
            # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            roots = jax.tree.map(lambda v, m: jnp.sqrt(v - m * m), square_avg, grad_avg)
        else:
            grad_avg, roots = None, jax.tree.map(jnp.sqrt, square_avg)
        updates = jax.tree.map(
            lambda g, root: g / (root + numerics.like(eps, root)), updates, roots
        )
        step = numerics.increment(state.step)
        return updates, RMSpropState(step, square_avg, grad_avg)

    return GradientTransformation(init, update)


def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """RMSprop with torch's L2 weight decay, centring, momentum and maximize options.

    torch.optim.RMSprop's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` and
    :math:`v_0 = \\bar g_0 = 0`:

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        v_t = \\alpha v_{t-1} + (1 - \\alpha) g_t^2, \\quad
        \\tilde v_t = v_t - \\bar g_t^2 \\ (\\text{centered}) \\ \\text{or} \\ v_t,

        b_t = \\mu b_{t-1} + \\frac{g_t}{\\sqrt{\\tilde v_t} + \\epsilon}, \\quad
        \\theta_t = \\theta_{t-1} - \\gamma b_t

    with :math:`\\bar g_t = \\alpha \\bar g_{t-1} + (1 - \\alpha) g_t`, :math:`b_0 = 0`, and
    :math:`b_t` replaced by :math:`g_t / (\\sqrt{\\tilde v_t} + \\epsilon)` when
    :math:`\\mu = 0` (no buffer is kept). The sign is :math:`-` with ``maximize``.

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      alpha: smoothing constant :math:`\\alpha`.
      eps: :math:`\\epsilon`, added to the denominator.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      momentum: momentum factor :math:`\\mu` (0 keeps no buffer, as in torch).
      centered: normalise by an estimate of the gradient's variance instead of its second
        moment.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``square_avg`` and, when used,
      ``momentum_buffer`` and ``grad_avg``. Complex parameters are treated as (real, imag)
      pairs, as torch does.

    References:
      Hinton, Srivastava & Swersky, `Neural Networks for Machine Learning, lecture 6e
      <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.

      Graves, `Generating Sequences With Recurrent Neural Networks
      <https://arxiv.org/abs/1308.0850>`_, 2013 (the centred form).
    """
    validation.check_lr(lr)
    validation.check_eps(eps)
    validation.check_momentum(momentum)
    validation.check_weight_decay(weight_decay)
    validation.require(lambda v: v >= 0.0, alpha, f"Invalid alpha value: {alpha}")
    # torch's buffer starts at zero, so b_1 = 0 * mu + g_1 / avg: SGD's momentum without
    # dampening (whose first buffer is the input itself) gives the same numbers.
    with_momentum = not is_static_zero(momentum)
    core = scale_by_rms(alpha, eps, centered)
    if with_momentum:
        core = chain(core, blocks.trace_momentum(momentum))
    return view_as_real(blocks.descent(core, lr, weight_decay, maximize=maximize))
