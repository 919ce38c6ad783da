"""The schedules with a closed form: torch's ``LambdaLR`` through ``CosineAnnealingWarmRestarts``.

Each is a formula of the step, O(1) per call, except :func:`multiplicative_lr`, whose factors
have no product form. :func:`cosine` is the cosine annealing that the stateful
``CosineAnnealingWarmRestarts`` also evaluates on the host.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Sequence

import jax.numpy as jnp

from optim_jax.schedules.arithmetic import (
    HOST, OUTRIGHT, Chaining, Ops, Schedule, Step, from_formula, with_chaining,
)
from optim_jax.schedules.checks import (
    check_constant_factor,
    check_linear_factors,
    check_lr_lambda,
    check_warm_restarts,
)


def lambda_lr(base_lr: float, lr_lambda: Callable[[Step], Any]) -> Schedule:
    """torch's ``LambdaLR``: :math:`\\eta_t = \\eta_0 \\cdot \\lambda(t)`.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      lr_lambda: the factor as a function of the step; jittable to be used under ``jit``
        (``lambda t: 0.95 ** t``). It receives the step as the schedule did: an int, or an
        integer array.

    Returns:
      The schedule ``step -> lr``.
    """
    return with_chaining(from_formula(lambda t, ops: base_lr * lr_lambda(t)), OUTRIGHT)


def multiplicative_lr(base_lr: float, lr_lambda: Callable[[Step], Any]) -> Schedule:
    """torch's ``MultiplicativeLR``: :math:`\\eta_t = \\eta_{t-1} \\cdot \\lambda(t)`.

    From :math:`\\eta_0` at step 0, that is
    :math:`\\eta_t = \\eta_0 \\prod_{s=1}^{t} \\lambda(s)`. The product has no closed form for an
    arbitrary ``lr_lambda``, so the schedule multiplies the factors one by one, as torch does
    (bit for bit): ``t`` evaluations of ``lr_lambda`` per call (a ``lax.fori_loop`` under
    ``jit``). For a constant factor use :func:`exponential_lr`, which costs O(1).

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      lr_lambda: the factor as a (jittable) function of the step, called for steps 1..t.

    Returns:
      The schedule ``step -> lr``.
    """
    check_lr_lambda(lr_lambda)
    return from_formula(
        lambda t, ops: ops.fori_loop(1, t + 1, lambda i, lr: lr * lr_lambda(i), base_lr)
    )


def step_lr(base_lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """torch's ``StepLR``: :math:`\\eta_t = \\eta_0 \\gamma^{\\lfloor t / s \\rfloor}`.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      step_size: the period :math:`s` of the decay, in steps.
      gamma: the multiplicative factor :math:`\\gamma` of each decay.

    Returns:
      The schedule ``step -> lr``.
    """
    return from_formula(lambda t, ops: base_lr * gamma ** (t // step_size))


def multi_step_lr(base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """torch's ``MultiStepLR``: :math:`\\eta_t = \\eta_0 \\gamma^{|\\{m \\le t\\}|}`.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      milestones: the steps at which the learning rate is multiplied by ``gamma``; a
        milestone listed twice counts twice, as in torch.
      gamma: the multiplicative factor :math:`\\gamma` of each decay.

    Returns:
      The schedule ``step -> lr``.
    """
    ordered = sorted(milestones)

    def passed(t, ops):
        if ops is HOST:
            return bisect.bisect_right(ordered, t)
        return jnp.searchsorted(jnp.asarray(ordered, t.dtype), t, side="right")

    return from_formula(lambda t, ops: base_lr * gamma ** passed(t, ops))


def constant_lr(base_lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    """torch's ``ConstantLR``: the learning rate scaled by a constant factor for a while.

    .. math::
        \\eta_t = \\eta_0 f \\ (t < T), \\qquad \\eta_t = \\eta_0 \\ (t \\ge T)

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      factor: the factor :math:`f \\in [0, 1]` applied until ``total_iters``.
      total_iters: :math:`T`, the number of steps the factor applies.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's message, if ``factor`` is outside [0, 1].
    """
    check_constant_factor(factor)
    return from_formula(lambda t, ops: base_lr * (factor + (t >= total_iters) * (1 - factor)))


def linear_lr(
    base_lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    """torch's ``LinearLR``: the learning rate scaled by a factor moving linearly to another.

    .. math::
        \\eta_t = \\eta_0 \\left(f_0 + (f_1 - f_0) \\frac{\\min(T, t)}{T}\\right)

    A Python step computes torch's closed form bit for bit. torch's recursive sequence, and that
    closed form, can miss :math:`f_1` by a rounding: with ``end_factor=0`` they may end at a
    tiny, even negative, rate such as -7e-19 instead of 0. Array steps are computed from the
    nearer end, exactly :math:`f_1` from step :math:`T` on (XLA's fused form of the closed
    form would miss it by its own rounding); elsewhere all agree to a few ulps.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      start_factor: :math:`f_0 \\in (0, 1]`, the factor at step 0.
      end_factor: :math:`f_1 \\in [0, 1]`, the factor from step ``total_iters`` on.
      total_iters: :math:`T`, the number of steps of the linear change.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's messages, for factors out of range.
    """
    check_linear_factors(start_factor, end_factor)
    change = end_factor - start_factor

    def formula(t, ops):
        done = ops.minimum(total_iters, t)
        if ops is HOST:
            return base_lr * (start_factor + change * done / total_iters)
        factor = jnp.where(
            2 * done < total_iters,
            start_factor + change * done / total_iters,
            end_factor - change * (total_iters - done) / total_iters,
        )
        return base_lr * factor

    return from_formula(formula)


def exponential_lr(base_lr: float, gamma: float) -> Schedule:
    """torch's ``ExponentialLR``: :math:`\\eta_t = \\eta_0 \\gamma^t`.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      gamma: the multiplicative factor :math:`\\gamma` of every step.

    Returns:
      The schedule ``step -> lr``.
    """
    return from_formula(lambda t, ops: base_lr * gamma**t)


def polynomial_lr(base_lr: float, total_iters: int = 5, power: float = 1.0) -> Schedule:
    """torch's ``PolynomialLR``: :math:`\\eta_t = \\eta_0 (1 - \\min(T, t) / T)^p`.

    A Python step computes torch's closed form bit for bit. Array steps compute the base as
    :math:`(T - \\min(T, t)) / T`: XLA would fuse torch's form into ``1 - t * (1 / T)``, which
    leaves 1e-17 instead of 0 from step :math:`T` on.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      total_iters: :math:`T`, the step from which the learning rate is 0.
      power: the power :math:`p` of the polynomial.

    Returns:
      The schedule ``step -> lr``.
    """

    def formula(t, ops):
        done = ops.minimum(total_iters, t)
        if ops is HOST:
            return base_lr * (1.0 - done / total_iters) ** power
        return base_lr * ((total_iters - done) / total_iters) ** power

    return from_formula(formula)


def cosine(base_lr: Any, eta_min: Any, t: Any, period: Any, ops: Ops) -> Any:
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / period)) / 2``, in torch's order."""
    return eta_min + (base_lr - eta_min) * (1 + ops.cos(math.pi * t / period)) / 2


def cosine_annealing_lr(base_lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:
    """torch's ``CosineAnnealingLR``: a cosine from the base rate down to ``eta_min``.

    .. math::
        \\eta_t = \\eta_{min} + (\\eta_0 - \\eta_{min}) \\frac{1 + \\cos(\\pi t / T_{max})}{2}

    Past ``T_max`` the curve rises again (period ``2 * T_max``), as torch's does.

    torch's class updates the rate recursively,
    :math:`\\eta_t = \\eta_{min} + (\\eta_{t-1} - \\eta_{min})
    \\frac{1 + \\cos(\\pi t / T_{max})}{1 + \\cos(\\pi (t - 1) / T_{max})}`, which equals this
    closed form to rounding (1e-12 relative over 300 steps, tested) as long as nothing else
    changes ``lr``. After an outside change (``group['lr'] = x``, or another scheduler chained
    with it), torch's recursion continues from the changed rate and no longer follows this
    curve; :class:`optim_jax.lr_scheduler.CosineAnnealingLR` does as torch does.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      T_max: :math:`T_{max}`, the number of steps from :math:`\\eta_0` down to
        :math:`\\eta_{min}`.
      eta_min: :math:`\\eta_{min}`, the minimum learning rate.

    Returns:
      The schedule ``step -> lr``.

    References:
      Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, ICLR 2017 (one cycle of it, without restarts).
    """
    return with_chaining(from_formula(lambda t, ops: cosine(base_lr, eta_min, t, T_max, ops)),
                         Chaining("restarts", T_max, eta_min))


def _restart_starts(T_0: int, T_mult: int, limit: int) -> list[int]:
    """The steps at which the cycles of lengths ``T_0, T_0 * T_mult, ...`` start, up to limit."""
    starts, length = [0], T_0
    while starts[-1] + length <= limit:
        starts.append(starts[-1] + length)
        length *= T_mult
    return starts


def cosine_annealing_warm_restarts(
    base_lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> Schedule:
    """torch's ``CosineAnnealingWarmRestarts`` (SGDR): cosine annealing with warm restarts.

    .. math::
        \\eta_t = \\eta_{min} + (\\eta_0 - \\eta_{min}) \\frac{1 + \\cos(\\pi T_{cur} / T_i)}{2}

    :math:`T_i = T_0 T_{mult}^i` is the length of the current cycle and :math:`T_{cur}` the
    steps since it started; both are found exactly in integers (torch's ``step(epoch)`` path
    uses a logarithm instead, which can misplace a restart by rounding; its ``step()`` path,
    which this schedule reproduces, counts).

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`, restored at each restart.
      T_0: the length of the first cycle, in steps.
      T_mult: the factor by which each cycle is longer than the previous one (an int >= 1).
      eta_min: :math:`\\eta_{min}`, the minimum learning rate.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's messages, for invalid ``T_0``, ``T_mult`` or ``eta_min``.

    References:
      Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
    """
    check_warm_restarts(T_0, T_mult, eta_min)
    if T_mult == 1:
        return with_chaining(
            from_formula(lambda t, ops: cosine(base_lr, eta_min, t % T_0, T_0, ops)), OUTRIGHT)
    # Array steps are int32 at most (the count of scale_by_learning_rate saturates there).
    array_starts = _restart_starts(T_0, T_mult, jnp.iinfo(jnp.int32).max)

    def formula(t, ops):
        if ops is HOST:
            starts = _restart_starts(T_0, T_mult, int(t))
            cycle = bisect.bisect_right(starts, t) - 1
        else:
            starts = jnp.asarray(array_starts, t.dtype)
            cycle = jnp.searchsorted(starts, t, side="right") - 1
        # The cycle length as a float: exact, and free of integer overflow in the last cycle.
        period = T_0 * float(T_mult) ** cycle
        return cosine(base_lr, eta_min, t - starts[cycle], period, ops)

    return with_chaining(from_formula(formula), OUTRIGHT)
