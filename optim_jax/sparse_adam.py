"""SparseAdam: Adam restricted to the entries a gradient has, as torch.optim.SparseAdam.

JAX has no sparse gradients; a gradient's **non-zero** entries play the part of the stored
entries of torch's sparse gradient. Only those entries' moments and parameters move; the others
keep their values exactly (their update is ``-0.0``, which leaves any float unchanged). This is
what torch computes for ``grad.to_sparse()`` of the same values. One difference remains: an
entry that torch's sparse gradient stores explicitly with the value zero does move in torch
(its moments decay), and does not move here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.sparse import JAXSparse

from optim_jax import blocks, numerics, validation
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.adam import AdamState


def scale_by_sparse_adam(
    lr: ScalarOrSchedule = 1e-3, betas: tuple = (0.9, 0.999), eps=1e-8
) -> GradientTransformation:
    """torch's SparseAdam step, on the non-zero entries of the gradient only.

    The output is the full update (learning rate included); entries where the gradient is zero
    get ``-0.0``.

    On the entries where :math:`g_t \\ne 0`:

    .. math::
        m_t = m_{t-1} + (1 - \\beta_1)(g_t - m_{t-1}), \\quad
        v_t = v_{t-1} + (1 - \\beta_2)(g_t^2 - v_{t-1}),

        u_t = -\\frac{\\gamma \\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}\\,
              \\frac{m_t}{\\sqrt{v_t} + \\epsilon}

    and :math:`m_t = m_{t-1}`, :math:`v_t = v_{t-1}`, :math:`u_t = 0` elsewhere. ``step``
    counts every update, with or without entries (as torch's does).

    Args:
      lr: :math:`\\gamma`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`.
      eps: :math:`\\epsilon`, added to the denominator.

    Returns:
      The transform; its state is an :class:`optim_jax.AdamState` (torch's ``step``,
      ``exp_avg``, ``exp_avg_sq``; no ``max_exp_avg_sq``).
    """
    beta1, beta2 = betas

    def init(params):
        zeros = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
        return AdamState(jnp.zeros([], jnp.int32), zeros(), zeros(), None)

    def update(updates, state, params=None):
        del params
        step = numerics.increment(state.step)
        # -step_size, step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t) formed as torch
        # forms it (in lr's dtype for an array, torch's tensor lr)
        scale = numerics.step_scale(
            lr, state.step, numerics.bias_correction(beta1, step),
            jnp.sqrt(numerics.bias_correction(beta2, step)),
        )

        def one(g, m, v):
            entry = g != 0
            m_delta = (g - m) * numerics.like(1 - beta1, g)
            v_delta = (g * g - v) * numerics.like(1 - beta2, g)
            numer = m_delta + m
            denom = jnp.sqrt(v_delta + v) + numerics.like(eps, g)
            u = numerics.like(scale, g) * (numer / denom)
            return (
                jnp.where(entry, u, jnp.full_like(u, -0.0)),
                jnp.where(entry, m + m_delta, m),
                jnp.where(entry, v + v_delta, v),
            )

        results = jax.tree.map(one, updates, state.exp_avg, state.exp_avg_sq)
        new_updates, exp_avg, exp_avg_sq = jax.tree.transpose(
            jax.tree.structure(updates), None, results
        )
        return new_updates, AdamState(step, exp_avg, exp_avg_sq, None)

    return GradientTransformation(init, update)


def reject_unsupported(params, group: int = 0) -> None:
    """torch's constructor errors, sparse before complex, naming each parameter by
    ``[group index, index in group]``: a sparse array (``jax.experimental.sparse``, whose data
    and indices would otherwise pass for two dense leaves) or a complex one."""
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, JAXSparse))
    sparse = [[group, i] for i, p in enumerate(leaves) if isinstance(p, JAXSparse)]
    if sparse:
        raise ValueError(
            f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors"
        )
    indices = [[group, i] for i, p in enumerate(leaves) if jnp.iscomplexobj(p)]
    if indices:
        raise ValueError(
            f"Complex params at indices {indices}: SparseAdam does not support complex parameters"
        )


def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """SparseAdam: Adam whose moments and parameters move only where the gradient is non-zero.

    For embedding-style gradients that touch few rows ("lazy Adam"): torch's sparse gradient
    entries are, here, the non-zero entries. torch.optim.SparseAdam's update, with
    :math:`g_t = \\nabla f(\\theta_{t-1})` and :math:`m_0 = v_0 = 0`, on the entries where
    :math:`g_t \\ne 0`:

    .. math::
        g_t \\leftarrow \\pm g_t, \\quad
        m_t = m_{t-1} + (1 - \\beta_1)(g_t - m_{t-1}), \\quad
        v_t = v_{t-1} + (1 - \\beta_2)(g_t^2 - v_{t-1}),

        \\theta_t = \\theta_{t-1} - \\frac{\\gamma \\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}
            \\frac{m_t}{\\sqrt{v_t} + \\epsilon}

    and :math:`m_t = m_{t-1}`, :math:`v_t = v_{t-1}`, :math:`\\theta_t = \\theta_{t-1}`
    elsewhere; :math:`t` counts every update, with or without entries. The sign is :math:`-`
    with ``maximize``. There is no weight decay, as in torch.

    Args:
      lr: :math:`\\gamma > 0`, a float or a schedule ``step -> lr``.
      betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment estimates.
      eps: :math:`\\epsilon > 0`.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``exp_avg`` and ``exp_avg_sq``.
      Complex parameters raise torch's ``ValueError`` at ``init``.

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015 (the dense algorithm).
    """
    validation.check_lr_size(lr)
    validation.require(lambda v: v > 0.0, lr, f"Invalid learning rate: {lr}", schedule=True)
    validation.require(lambda v: v > 0.0, eps, f"Invalid epsilon value: {eps}")
    validation.check_betas(betas)
    inner = scale_by_sparse_adam(lr, betas, eps)

    def init(params):
        reject_unsupported(params)
        return inner.init(params)

    return blocks.descent(GradientTransformation(init, inner.update), None, maximize=maximize)
