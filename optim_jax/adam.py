"""Adam (Kingma & Ba, 2015) as torch.optim.Adam computes it."""

from __future__ import annotations

from optim_jax import transform, validation
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optim_jax.combine import view_as_real


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
    return view_as_real(transform.descent(
        transform.scale_by_adam(betas, eps, amsgrad, lr=lr), lr, weight_decay,
        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay, lr_in_core=True,
    ))
