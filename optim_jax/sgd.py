"""Stochastic gradient descent with torch.optim.SGD's momentum, dampening and Nesterov."""

from __future__ import annotations

from optim_jax import blocks, validation
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule, identity
from optim_jax.numerics import is_static_zero


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Stochastic gradient descent with torch's momentum, dampening and Nesterov options.

    torch.optim.SGD's update, with :math:`g_t = \\nabla f(\\theta_{t-1})` (negated when
    ``maximize``):

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        b_t = \\begin{cases} g_t & t = 1 \\\\
            \\mu b_{t-1} + (1 - \\tau) g_t & t > 1 \\end{cases},

        d_t = g_t + \\mu b_t \\ (\\text{nesterov}) \\ \\text{or} \\ b_t, \\quad
        \\theta_t = \\theta_{t-1} - \\gamma d_t

    and :math:`d_t = g_t` (no buffer) when :math:`\\mu = 0`. The first buffer is the gradient
    itself, undampened, and the learning rate multiplies the buffer's output rather than
    entering it, as in torch (Sutskever et al. put it inside the buffer; for plain momentum the
    two agree while the learning rate is constant).

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      momentum: momentum factor :math:`\\mu` (0 keeps no buffer).
      dampening: dampening :math:`\\tau` for momentum.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``momentum_buffer`` and a ``step`` count when
      momentum is used, no buffer otherwise.

    References:
      Robbins & Monro, `A Stochastic Approximation Method
      <https://doi.org/10.1214/aoms/1177729586>`_, Annals of Mathematical Statistics, 1951.

      Sutskever, Martens, Dahl & Hinton, `On the importance of initialization and momentum in
      deep learning <https://proceedings.mlr.press/v28/sutskever13.html>`_, ICML 2013 (the
      momentum and Nesterov forms).

    Example:
      >>> import jax.numpy as jnp
      >>> import optim_jax
      >>> tx = optim_jax.sgd(lr=0.1, momentum=0.9)
      >>> params = {'w': jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({'w': jnp.array([0.5, 0.5])}, state, params)
      >>> print(optim_jax.apply_updates(params, updates)['w'])
      [ 0.95 -2.05]
    """
    validation.check_lr(lr)
    validation.check_momentum(momentum)
    validation.check_weight_decay(weight_decay)
    validation.check_nesterov(nesterov, momentum, dampening)
    core = (
        identity() if is_static_zero(momentum)
        else blocks.trace_momentum(momentum, dampening, nesterov)
    )
    return blocks.descent(core, lr, weight_decay, maximize=maximize)
