"""Stochastic gradient descent with torch.optim.SGD's momentum, dampening and Nesterov."""

from __future__ import annotations

from optim_jax import transform, validation
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule, identity
from optim_jax.numerics import is_static_zero
from optim_jax.optimizer import Optimizer


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """SGD as torch.optim.SGD computes it.

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        b_t = \\mu b_{t-1} + (1 - \\tau) g_t \\ (b_1 = g_1), \\quad
        \\theta_t = \\theta_{t-1} - \\gamma \\,(g_t + \\mu b_t \\text{ if nesterov else } b_t)

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      momentum: momentum factor :math:`\\mu` (0 keeps no buffer).
      dampening: dampening :math:`\\tau` for momentum.
      weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds ``momentum_buffer`` when momentum is used.
    """
    validation.check_lr(lr)
    validation.check_momentum(momentum)
    validation.check_weight_decay(weight_decay)
    validation.check_nesterov(nesterov, momentum, dampening)
    core = (
        identity() if is_static_zero(momentum)
        else transform.trace_momentum(momentum, dampening, nesterov)
    )
    return transform.descent(core, lr, weight_decay, maximize=maximize)


class SGD(Optimizer):
    """torch.optim.SGD over JAX pytrees: ``SGD(params, lr=1e-3, momentum=0, ...)``.

    Arguments as :func:`sgd`; ``params`` as :class:`optim_jax.Optimizer` takes them. State per
    parameter, when momentum is non-zero: ``momentum_buffer`` and ``step`` (momentum steps
    taken; 0 means the buffer starts from the next gradient, as torch's ``None`` buffer does).
    """

    transform = staticmethod(sgd)
    static_zeros = ("momentum", "weight_decay")
