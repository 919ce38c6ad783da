"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, as torch.optim.AdamW."""

from __future__ import annotations

from optim_jax.adam import adam
from optim_jax.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optim_jax.optimizer import Optimizer


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Adam whose weight decay shrinks the weights directly, outside the moment estimates.

    .. math::
        \\theta_t = \\theta_{t-1} - \\gamma \\lambda \\theta_{t-1} - \\frac{\\gamma}{1-\\beta_1^t}
            \\frac{m_t}{\\sqrt{\\hat v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    Arguments as :func:`optim_jax.adam`; ``weight_decay`` defaults to ``1e-2`` as in torch.
    """
    return adam(
        lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True
    )


class AdamW(Optimizer):
    """torch.optim.AdamW over JAX pytrees: Adam with decoupled weight decay (default 1e-2).

    Arguments as :func:`adamw`; state as :class:`optim_jax.Adam`'s.
    """

    transform = staticmethod(adamw)
    static_zeros = ("weight_decay",)
