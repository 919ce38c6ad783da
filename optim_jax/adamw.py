"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, as torch.optim.AdamW."""

from __future__ import annotations

from optim_jax.adam import adam
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """AdamW: Adam whose weight decay shrinks the weights directly, outside the moments.

    torch.optim.AdamW's update, with :math:`g_t = \\nabla f(\\theta_{t-1})`:

    .. math::
        g_t \\leftarrow \\pm g_t, \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        \\hat v_t = \\max(\\hat v_{t-1}, v_t) \\ (\\text{amsgrad}) \\ \\text{or} \\ v_t,

        \\theta_t = \\theta_{t-1} - \\gamma \\lambda \\theta_{t-1} - \\frac{\\gamma}{1-\\beta_1^t}
            \\frac{m_t}{\\sqrt{\\hat v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    from :math:`m_0 = v_0 = \\hat v_0 = 0`; the sign is :math:`-` with ``maximize``. This is
    :func:`adam` with ``decoupled_weight_decay=True``: the decay :math:`\\gamma \\lambda` is
    decoupled from the gradient, so it does not pass through the adaptive denominator (and
    scales with the learning rate, as in torch, rather than with a separate schedule multiplier
    as in the paper).

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates, each in
        ``[0, 1)``.
      eps: :math:`\\epsilon`, added to the denominator.
      weight_decay: :math:`\\lambda`, the decoupled decay rate (default ``1e-2``, as in torch):
        each step multiplies the weights by ``1 - lr * weight_decay``.
      amsgrad: divide by the running maximum :math:`\\hat v_t` of :math:`v_t` (AMSGrad).
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state is :func:`adam`'s: torch's ``step``, ``exp_avg``,
      ``exp_avg_sq`` and, with AMSGrad, ``max_exp_avg_sq``.

    References:
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.

      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.
    """
    return adam(
        lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True
    )
