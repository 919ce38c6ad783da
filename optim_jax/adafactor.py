"""Adafactor (Shazeer & Stern, 2018) as torch.optim.Adafactor (torch >= 2.5) computes it."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import blocks, numerics, validation
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.numerics import is_static_zero


class AdafactorState(NamedTuple):
    """torch's Adafactor state: the step count and the (factored) second moments.

    A parameter's leaf in the fields it does not use is an empty array of shape ``(0,)`` (torch
    has no entry there), since every field is a tree shaped like the params.

    Attributes:
      step: :math:`t`, the number of updates made (an int32 scalar).
      row_var: :math:`R_t`, shape ``(..., R, 1)``: the running row means of :math:`g^2` of
        parameters with two or more dimensions.
      col_var: :math:`C_t`, shape ``(..., 1, C)``: their running column means.
      variance: :math:`\\hat V_t`, the full second moment of scalars and vectors.
    """

    step: jax.Array
    row_var: Any
    col_var: Any
    variance: Any


def _placeholder(p: jax.Array) -> jax.Array:
    return jnp.zeros((0,), p.dtype)


def scale_by_adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
    weight_decay: Any = 0.0,
) -> GradientTransformation:
    """Adafactor's step: factored second moment, relative step size and update clipping.

    As torch computes it. The output is the full update :math:`u_t = \\theta_t - \\theta_{t-1}`
    of :func:`adafactor` (whose docstring states the math), learning rate and decoupled weight
    decay included, for the gradient as given (``maximize`` is :func:`adafactor`'s sign flip
    before it), so no learning-rate block follows.

    Args:
      lr: :math:`\\gamma`, a float or a schedule ``step -> lr``.
      beta2_decay: :math:`\\tau \\le 0`, the decay exponent of the second-moment weight.
      eps: :math:`(\\epsilon_1, \\epsilon_2)`; :math:`\\epsilon_1` ``None`` means the machine
        epsilon of the dtype of the tree's first leaf (torch takes the group's first
        parameter's and keeps it for the whole group).
      d: :math:`d \\ge 1`, the update clipping threshold.
      weight_decay: :math:`\\lambda`, decoupled weight decay.

    Returns:
      The transform; its state is an :class:`AdafactorState`.
    """
    eps1, eps2 = eps

    def init(params):
        validation.reject_complex(params, "Adafactor does not support complex parameters")

        def fields(p):
            if jnp.ndim(p) > 1:
                return (numerics.zeros_like(p[..., :1]), numerics.zeros_like(p[..., :1, :]),
                        _placeholder(p))
            return _placeholder(p), _placeholder(p), numerics.zeros_like(p)

        row_var, col_var, variance = jax.tree.transpose(
            jax.tree.structure(params), None, jax.tree.map(fields, params)
        )
        return AdafactorState(jnp.zeros([], jnp.int32), row_var, col_var, variance)

    def update(updates, state, params=None):
        blocks.require_params(params, "scale_by_adafactor")
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates, state
        dtype = numerics.scalar_dtype()
        first_eps = float(jnp.finfo(leaves[0].dtype).eps) if eps1 is None else eps1
        group_lr = numerics.resolve(lr, state.step)
        step = numerics.increment(state.step)
        t = step.astype(dtype)
        one_minus_beta2 = jnp.power(t, jnp.asarray(beta2_decay, dtype))
        # torch's rho_t = min(lr, 1 / sqrt(t)) is Python's min: lr unless 1 / sqrt(t) < lr, and
        # a tensor lr keeps the scalars after it in its dtype (see step_scale)
        rho = 1 / jnp.sqrt(t)
        use_lr = ~(rho < group_lr)

        def one(g, p, row_var, col_var, variance):
            scale = jnp.maximum(
                jnp.asarray(eps2, dtype), blocks.norm(p).astype(dtype) / math.sqrt(p.size)
            )
            if g.ndim > 1:
                row_mean = jnp.square(blocks.norm(g, axis=-1, keepdims=True)) / g.shape[-1]
                row_var = numerics.lerp(row_var, row_mean, one_minus_beta2)
                col_mean = jnp.square(blocks.norm(g, axis=-2, keepdims=True)) / g.shape[-2]
                col_var = numerics.lerp(col_var, col_mean, one_minus_beta2)
                estimate = (row_var * col_var) / jnp.maximum(
                    jnp.mean(row_var, axis=-2, keepdims=True), numerics.like(first_eps, g)
                )
            else:
                variance = numerics.lerp(variance, g * g, one_minus_beta2)
                estimate = variance
            direction = jax.lax.rsqrt(
                jnp.maximum(estimate, numerics.like(first_eps * first_eps, g))
            ) * g
            denom = jnp.maximum(
                1.0, blocks.norm(direction).astype(dtype) / (math.sqrt(direction.size) * d)
            )
            # torch's add_(update, alpha=-alpha / denom), alpha = scale * rho_t
            size = jnp.where(use_lr, numerics.step_scale(group_lr, state.step, denom, scale),
                             -(scale * rho) / denom)
            u = direction * numerics.like(size, g)
            if not is_static_zero(weight_decay):
                u = numerics.decayed(u, p, numerics.decay_factor(group_lr, weight_decay))
            return u, row_var, col_var, variance

        results = jax.tree.map(
            one, updates, params, state.row_var, state.col_var, state.variance
        )
        new_updates, row_var, col_var, variance = jax.tree.transpose(
            jax.tree.structure(updates), None, results
        )
        return new_updates, AdafactorState(step, row_var, col_var, variance)

    return GradientTransformation(init, update)


def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """Adafactor, torch's version: factored second moments, relative step size, clipping.

    The second moment of a matrix (or of each matrix in a batch, the last two dimensions) is
    kept as row and column means, :math:`O(R + C)` memory instead of :math:`O(RC)`; the step
    size is relative to the parameter's RMS, and the update is clipped to RMS :math:`d`.
    torch.optim.Adafactor's update, with :math:`g_t = \\nabla f(\\theta_{t-1})`, :math:`R_0 =
    C_0 = \\hat V_0 = 0`:

    .. math::
        g_t \\leftarrow \\pm g_t, \\quad
        \\hat\\beta_{2,t} = 1 - t^{\\tau}, \\quad
        \\rho_t = \\min(\\gamma, 1/\\sqrt t), \\quad
        \\alpha_t = \\max(\\epsilon_2, \\operatorname{RMS}(\\theta_{t-1}))\\, \\rho_t,

        R_t = \\operatorname{lerp}(R_{t-1}, \\operatorname{mean}_{-1}(g_t^2), 1-\\hat\\beta_{2,t}),
        \\quad C_t = \\operatorname{lerp}(C_{t-1}, \\operatorname{mean}_{-2}(g_t^2),
        1-\\hat\\beta_{2,t}), \\quad
        \\hat V_t = \\frac{R_t C_t}{\\max(\\operatorname{mean}_{-2}(R_t), \\epsilon_1)}

    for parameters of two or more dimensions (:math:`\\hat V_t = \\operatorname{lerp}(\\hat
    V_{t-1}, g_t^2, 1-\\hat\\beta_{2,t})` for scalars and vectors), then

    .. math::
        U_t = \\frac{g_t}{\\sqrt{\\max(\\hat V_t, \\epsilon_1^2)}}, \\quad
        \\theta_t = \\theta_{t-1} - \\gamma\\lambda\\theta_{t-1}
            - \\frac{\\alpha_t}{\\max(1, \\operatorname{RMS}(U_t)/d)}\\, U_t

    with :math:`\\operatorname{RMS}(x) = \\|x\\|_2 / \\sqrt{\\operatorname{numel}(x)}` and the sign
    :math:`-` with ``maximize``. Unlike the paper, torch's version keeps no first moment (the
    paper's optional :math:`\\beta_1`), caps the relative step size at :math:`\\gamma` (the paper
    fixes :math:`10^{-2}`), applies :math:`\\epsilon_1` as lower bounds instead of adding it to
    :math:`g_t^2`, and adds decoupled weight decay.

    Args:
      lr: :math:`\\gamma`, a float or a schedule ``step -> lr``.
      beta2_decay: :math:`\\tau \\le 0`: the second moment's weight on the new gradient is
        :math:`t^{\\tau}`.
      eps: :math:`(\\epsilon_1, \\epsilon_2)`: :math:`\\epsilon_1` bounds the second moment
        below (``None``: the params' dtype's machine epsilon), :math:`\\epsilon_2` the
        parameter scale.
      d: clipping threshold :math:`d \\ge 1` on the update's RMS.
      weight_decay: :math:`\\lambda`, decoupled weight decay scaled by ``lr``.
      maximize: maximise the objective instead of minimising it.

    Returns:
      The transform; its state holds torch's ``step``, ``row_var`` (:math:`R`), ``col_var``
      (:math:`C`) and ``variance`` (:math:`\\hat V` of scalars and vectors). Complex
      parameters raise ``RuntimeError`` at ``init``, as torch does at its first step.

    References:
      Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
      <https://arxiv.org/abs/1804.04235>`_, ICML 2018.
    """
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"Invalid eps: {eps!r} (expected a pair (eps1, eps2))")
    validation.check_lr_size(lr)
    validation.require(lambda v: v >= 0.0, lr, f"Learning rate should be >= 0 but is: {lr}",
                        schedule=True)
    validation.require(
        lambda v: v <= 0.0, beta2_decay, f"beta2_decay should be <= 0 but is: {beta2_decay}"
    )
    if eps[0] is not None:
        validation.require(lambda v: v >= 0.0, eps[0], f"epsilon1 should be >= 0 but is: {eps[0]}")
    validation.require(lambda v: v >= 0.0, eps[1], f"epsilon2 should be >= 0 but is: {eps[1]}")
    validation.require(
        lambda v: v >= 1.0, d, f"Clipping threshold d should be >= 1 but is: {d}"
    )
    validation.require(
        lambda v: v >= 0.0, weight_decay, f"weight_decay should be >= 0 but is: {weight_decay}"
    )
    return blocks.descent(
        scale_by_adafactor(lr, beta2_decay, eps, d, weight_decay), None, maximize=maximize
    )
