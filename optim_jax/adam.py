"""Adam (Kingma & Ba, 2015) as torch.optim.Adam computes it."""

from __future__ import annotations

from optim_jax import transform, validation
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optim_jax.combine import view_as_real
from optim_jax.optimizer import Optimizer


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
    """Adam, with torch's L2 weight decay, AMSGrad and maximize options.

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,

        \\theta_t = \\theta_{t-1} - \\frac{\\gamma}{1-\\beta_1^t}
            \\frac{m_t}{\\sqrt{\\hat v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    where :math:`\\hat v_t = \\max_{s \\le t} v_s` with AMSGrad, else :math:`v_t`.

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon`, added to the denominator.
      weight_decay: :math:`\\lambda`; an L2 penalty on the gradient, or AdamW's decoupled decay
        ``theta *= 1 - lr * weight_decay`` when ``decoupled_weight_decay``.
      amsgrad: use the running maximum of :math:`v_t` (Reddi et al., 2018).
      maximize: maximise the objective instead of minimising it.
      decoupled_weight_decay: decay the weights directly, as :func:`adamw` does.

    Returns:
      The transform; its state holds torch's ``step``, ``exp_avg``, ``exp_avg_sq`` and, with
      AMSGrad, ``max_exp_avg_sq``. Complex parameters are treated as (real, imag) pairs, as
      torch does.
    """
    validation.check_adam_family(lr, betas, eps, weight_decay)
    return view_as_real(transform.descent(
        transform.scale_by_adam(betas, eps, amsgrad), lr, weight_decay,
        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
    ))


class Adam(Optimizer):
    """torch.optim.Adam over JAX pytrees: ``Adam(params, lr=1e-3, betas=(0.9, 0.999), ...)``.

    Arguments as :func:`adam`; ``params`` as :class:`optim_jax.Optimizer` takes them. State per
    parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with AMSGrad, ``max_exp_avg_sq``.
    """

    transform = staticmethod(adam)
    static_zeros = ("weight_decay",)
