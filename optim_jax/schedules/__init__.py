"""Pure learning-rate schedules: torch.optim.lr_scheduler as jittable functions ``step -> lr``.

Every torch scheduler with a closed or recursive form has a function here, named in snake_case
with torch's argument names and defaults, the optimizer replaced by the group's base learning
rate: ``StepLR(opt, step_size=30, gamma=0.1)`` is ``step_lr(base_lr, step_size=30, gamma=0.1)``.
``schedule(t)`` is the ``lr`` torch's scheduler gives the optimizer's ``(t+1)``-th step, after
``t`` calls of ``scheduler.step()``; pass a schedule as ``lr=`` of any pure transform (it is
evaluated at the number of updates done before the current one) or to
:func:`optim_jax.inject_hyperparams`.

Called with a Python (or NumPy) number, a schedule computes on the host in float64 and returns
a Python float, bit for bit as torch's closed form where it has one (``_get_closed_form_lr``,
or ``get_lr`` for the classes that compute the rate outright): that is how
:mod:`optim_jax.lr_scheduler` evaluates the same formulas, so both faces share one
implementation of each. Called with an array step (traced or not), it computes with
``jax.numpy`` in the widest enabled float (float64 under ``jax_enable_x64``, else float32) and
returns an array; it jits and vmaps over steps.
XLA evaluates ``x / c`` as ``x * (1 / c)``, fuses multiply-adds and has its own ``cos``, so array
values differ from torch's in the last bits: about 1e-14 relative, up to 6e-13 where torch's
formula cancels (the last steps of a ``OneCycleLR``, where torch's own rounding error is as
large). Where torch's sequence is exactly 0 the array forms are too.

Several of torch's classes update ``lr`` recursively (``lr *= gamma`` every step) rather than
from the closed form their documentation gives. Without outside changes to ``lr`` the two agree
to rounding (tested: 1e-12 relative over 300 steps in float64; where torch's recursion should
reach 0 it can end a rounding away, e.g. at -7e-19); the functions here use the closed form, so
that a schedule costs O(1) per step. The one exception is :func:`multiplicative_lr`, whose
factors have no product form. :func:`reduce_lr_on_plateau` depends on the losses seen, so it is
a transform with state, not a schedule.
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from optim_jax import numerics
from optim_jax.base import GradientTransformationExtraArgs

__all__ = [
    "ReduceLROnPlateauState",
    "Schedule",
    "Step",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "one_cycle_momentum",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
    "swa_annealing",
    "swalr",
]

Step = int | jax.Array
"""A step count: a Python int (host arithmetic, a float result) or an integer array."""

Schedule = Callable[[Step], Any]
"""A function ``step -> lr``: a float for a Python step, an array for an array step."""


# -- host and array arithmetic ---------------------------------------------------------------


def _host_fori_loop(lower: int, upper: int, body: Callable, init: Any) -> Any:
    for i in range(lower, upper):
        init = body(i, init)
    return init


def _array_fori_loop(lower: Any, upper: Any, body: Callable, init: Any) -> Any:
    return jax.lax.fori_loop(lower, upper, body, jnp.asarray(init, numerics.scalar_dtype()))


class _Ops(NamedTuple):
    """The operations whose host (Python float, as torch computes) and array forms differ."""

    cos: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    # cond(pred, if_true, if_false) calls only the chosen thunk on the host, where the other
    # branch may divide by zero; on arrays both run and one is selected.
    cond: Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
    fori_loop: Callable[[Any, Any, Callable, Any], Any]


_HOST = _Ops(
    cos=math.cos,
    floor=math.floor,
    minimum=min,
    maximum=max,
    where=lambda pred, a, b: a if pred else b,
    cond=lambda pred, a, b: a() if pred else b(),
    fori_loop=_host_fori_loop,
)

_ARRAY = _Ops(
    cos=jnp.cos,
    floor=jnp.floor,
    minimum=jnp.minimum,
    maximum=jnp.maximum,
    where=jnp.where,
    cond=lambda pred, a, b: jnp.where(pred, a(), b()),
    fori_loop=_array_fori_loop,
)


def _schedule(formula: Callable[[Any, _Ops], Any]) -> Schedule:
    """The schedule computing ``formula(step, ops)``: on the host for a number, else with jnp."""

    def schedule(step: Step) -> Any:
        if isinstance(step, numbers.Real):
            return formula(step, _HOST)
        step = jnp.asarray(step)
        if jnp.issubdtype(step.dtype, jnp.integer):
            # The widest enabled int: jnp divides int32 arrays in float32 even with x64 on.
            step = step.astype(jnp.result_type(int))
        return jnp.asarray(formula(step, _ARRAY)).astype(numerics.scalar_dtype())

    return schedule


# -- argument checks, with torch's messages (shared with optim_jax.lr_scheduler) --------------


def _check_lr_lambda(lr_lambda: Any) -> None:
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")


def _check_constant_factor(factor: float) -> None:
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")


def _check_linear_factors(start_factor: float, end_factor: float) -> None:
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal "
            "to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")


def _check_warm_restarts(T_0: int, T_mult: int, eta_min: float) -> None:
    if T_0 <= 0 or not isinstance(T_0, int):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not isinstance(T_mult, int):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not isinstance(eta_min, (float, int)):
        raise ValueError(
            f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
        )


def _check_cyclic_mode(mode: str, scale_fn: Callable | None) -> None:
    if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")


def _one_cycle_total_steps(
    total_steps: int | None, epochs: int | None, steps_per_epoch: int | None
) -> int:
    if total_steps is not None:
        if total_steps <= 0 or not isinstance(total_steps, int):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(
                f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
            )
        return epochs * steps_per_epoch
    raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")


def _check_one_cycle(pct_start: float, anneal_strategy: str) -> None:
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            "anneal_strategy must be one of 'cos' or 'linear', instead got "
            f"{anneal_strategy}"
        )


def _check_schedule_count(name: str, count: int, purpose: str = "") -> None:
    if count < 1:
        raise ValueError(
            f"{name} expects at least one scheduler{purpose}, but got no scheduler."
        )


def _check_milestone_count(schedule_count: int, milestone_count: int) -> None:
    if milestone_count != schedule_count - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more "
            f"than the number of milestone points, but got number of schedulers "
            f"{schedule_count} and the number of milestones to be equal to {milestone_count}"
        )


def _check_plateau_factor(factor: float) -> None:
    if factor >= 1.0:
        raise ValueError("Factor should be < 1.0.")


def _check_plateau_modes(mode: str, threshold_mode: str) -> None:
    if mode not in {"min", "max"}:
        raise ValueError("mode " + mode + " is unknown!")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError("threshold mode " + threshold_mode + " is unknown!")


# -- closed forms ----------------------------------------------------------------------------


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
    return _schedule(lambda t, ops: base_lr * lr_lambda(t))


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
    _check_lr_lambda(lr_lambda)
    return _schedule(
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
    return _schedule(lambda t, ops: base_lr * gamma ** (t // step_size))


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
        if ops is _HOST:
            return bisect.bisect_right(ordered, t)
        return jnp.searchsorted(jnp.asarray(ordered, t.dtype), t, side="right")

    return _schedule(lambda t, ops: base_lr * gamma ** passed(t, ops))


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
    _check_constant_factor(factor)
    return _schedule(lambda t, ops: base_lr * (factor + (t >= total_iters) * (1 - factor)))


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
    _check_linear_factors(start_factor, end_factor)
    change = end_factor - start_factor

    def formula(t, ops):
        done = ops.minimum(total_iters, t)
        if ops is _HOST:
            return base_lr * (start_factor + change * done / total_iters)
        factor = jnp.where(
            2 * done < total_iters,
            start_factor + change * done / total_iters,
            end_factor - change * (total_iters - done) / total_iters,
        )
        return base_lr * factor

    return _schedule(formula)


def exponential_lr(base_lr: float, gamma: float) -> Schedule:
    """torch's ``ExponentialLR``: :math:`\\eta_t = \\eta_0 \\gamma^t`.

    Args:
      base_lr: the group's initial learning rate :math:`\\eta_0`.
      gamma: the multiplicative factor :math:`\\gamma` of every step.

    Returns:
      The schedule ``step -> lr``.
    """
    return _schedule(lambda t, ops: base_lr * gamma**t)


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
        if ops is _HOST:
            return base_lr * (1.0 - done / total_iters) ** power
        return base_lr * ((total_iters - done) / total_iters) ** power

    return _schedule(formula)


def _cosine(base_lr: Any, eta_min: Any, t: Any, period: Any, ops: _Ops) -> Any:
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
    return _schedule(lambda t, ops: _cosine(base_lr, eta_min, t, T_max, ops))


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
    _check_warm_restarts(T_0, T_mult, eta_min)
    if T_mult == 1:
        return _schedule(lambda t, ops: _cosine(base_lr, eta_min, t % T_0, T_0, ops))
    # Array steps are int32 at most (the count of scale_by_learning_rate saturates there).
    array_starts = _restart_starts(T_0, T_mult, jnp.iinfo(jnp.int32).max)

    def formula(t, ops):
        if ops is _HOST:
            starts = _restart_starts(T_0, T_mult, int(t))
            cycle = bisect.bisect_right(starts, t) - 1
        else:
            starts = jnp.asarray(array_starts, t.dtype)
            cycle = jnp.searchsorted(starts, t, side="right") - 1
        # The cycle length as a float: exact, and free of integer overflow in the last cycle.
        period = T_0 * float(T_mult) ** cycle
        return _cosine(base_lr, eta_min, t - starts[cycle], period, ops)

    return _schedule(formula)


# -- cyclic schedules ------------------------------------------------------------------------


def _triangular_scale(x: Any) -> float:
    return 1.0


def _triangular2_scale(x: Any) -> Any:
    return 1 / (2.0 ** (x - 1))


def _exp_range_scale(gamma: float, x: Any) -> Any:
    return gamma**x


def _cyclic_builtin_scale(mode: str, gamma: float) -> tuple[Callable[[Any], Any], str]:
    """A built-in mode's scale function and what it is evaluated on ('cycle', 'iterations')."""
    if mode == "triangular":
        return _triangular_scale, "cycle"
    if mode == "triangular2":
        return _triangular2_scale, "cycle"
    return functools.partial(_exp_range_scale, gamma), "iterations"


def _cyclic_sizes(step_size_up: float, step_size_down: float | None) -> tuple[float, float]:
    """torch's ``total_size`` and ``step_ratio`` (the rising fraction of a cycle)."""
    step_size_up = float(step_size_up)
    step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
    total_size = step_size_up + step_size_down
    return total_size, step_size_up / total_size


def _cyclic_height(
    t: Any,
    low: Any,
    high: Any,
    total_size: float,
    step_ratio: float,
    scale_fn: Callable[[Any], Any],
    scale_mode: str,
    ops: _Ops,
) -> Any:
    """How far above ``low`` (the lr) or below ``high`` (the momentum) step ``t`` is."""
    cycle = ops.floor(1 + t / total_size)
    x = 1.0 + t / total_size - cycle
    scale_factor = ops.cond(
        x <= step_ratio, lambda: x / step_ratio, lambda: (x - 1) / (step_ratio - 1)
    )
    return (high - low) * scale_factor * scale_fn(cycle if scale_mode == "cycle" else t)


def _cyclic(
    low: float,
    high: float,
    rising: bool,
    step_size_up: int,
    step_size_down: int | None,
    mode: str,
    gamma: float,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
) -> Schedule:
    """:func:`cyclic_lr` (``rising``, from ``low``) or :func:`cyclic_momentum` (from ``high``)."""
    _check_cyclic_mode(mode, scale_fn)
    total_size, step_ratio = _cyclic_sizes(step_size_up, step_size_down)
    if scale_fn is None:
        scale_fn, scale_mode = _cyclic_builtin_scale(mode, gamma)

    def formula(t, ops):
        height = _cyclic_height(t, low, high, total_size, step_ratio, scale_fn, scale_mode, ops)
        return low + height if rising else high - height

    return _schedule(formula)


def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    """torch's ``CyclicLR`` (Smith, 2017): triangular cycles between ``base_lr`` and ``max_lr``.

    .. math::
        c = \\lfloor 1 + t / (u + d) \\rfloor, \\quad x = 1 + t / (u + d) - c, \\quad
        h = x / r \\text{ if } x \\le r \\text{ else } (x - 1) / (r - 1), \\quad
        \\eta_t = \\eta_{base} + (\\eta_{max} - \\eta_{base})\\, h\\, s(c \\text{ or } t)

    with :math:`r = u / (u + d)` and the scale :math:`s` of the mode: ``triangular``
    :math:`s = 1`; ``triangular2`` :math:`s(c) = 2^{1 - c}` (amplitude halved every cycle);
    ``exp_range`` :math:`s(t) = \\gamma^t`.

    Args:
      base_lr: the lower boundary of the cycle (torch sets the group's ``lr`` to it).
      max_lr: the upper boundary.
      step_size_up: :math:`u`, steps in the rising half of a cycle.
      step_size_down: :math:`d`, steps in the falling half; ``None``: ``step_size_up``.
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored with ``scale_fn``.
      gamma: :math:`\\gamma` of ``'exp_range'``.
      scale_fn: a custom (jittable) scale :math:`s`, replacing ``mode``.
      scale_mode: with ``scale_fn``, whether it takes the cycle number (``'cycle'``, a float
        array under ``jit``) or the step (``'iterations'``).

    Returns:
      The schedule ``step -> lr``. :func:`cyclic_momentum` gives the momentum torch cycles
      alongside.

    Raises:
      ValueError: torch's message, for an unknown ``mode`` without ``scale_fn``.

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, WACV 2017.
    """
    return _cyclic(
        base_lr, max_lr, True, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
    )


def cyclic_momentum(
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    """The momentum torch's ``CyclicLR`` cycles with ``cycle_momentum=True``: inversely to lr.

    :math:`m_t = m_{max} - (m_{max} - m_{base})\\, h\\, s(\\cdot)`, with :math:`h` and :math:`s`
    as in :func:`cyclic_lr`. Use it as SGD's ``momentum`` (or Adam's :math:`\\beta_1`), e.g.
    ``inject_hyperparams(optim_jax.sgd)(lr=cyclic_lr(...), momentum=cyclic_momentum(...))``.

    Args:
      base_momentum: the momentum at the peak of the learning rate.
      max_momentum: the momentum at the start of a cycle.
      step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode: as for
        :func:`cyclic_lr` (pass the same values).

    Returns:
      The schedule ``step -> momentum``.
    """
    return _cyclic(
        base_momentum, max_momentum, False, step_size_up, step_size_down, mode, gamma,
        scale_fn, scale_mode,
    )


# -- one cycle -------------------------------------------------------------------------------


def _annealing_cos(start: Any, end: Any, pct: Any, ops: _Ops) -> Any:
    """Cosine anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1 (torch's order)."""
    cos_out = ops.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _annealing_linear(start: Any, end: Any, pct: Any, ops: _Ops) -> Any:
    """Linear anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1 (torch's order)."""
    return (end - start) * pct + start


_ANNEALING = {"cos": _annealing_cos, "linear": _annealing_linear}


def _one_cycle_phases(total_steps: int, pct_start: float, three_phase: bool) -> list[dict]:
    """torch's ``_schedule_phases``: each phase's last step and the group keys it anneals."""
    if three_phase:
        return [
            {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr",
             "end_lr": "max_lr", "start_momentum": "max_momentum",
             "end_momentum": "base_momentum"},
            {"end_step": float(2 * pct_start * total_steps) - 2, "start_lr": "max_lr",
             "end_lr": "initial_lr", "start_momentum": "base_momentum",
             "end_momentum": "max_momentum"},
            {"end_step": total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
             "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
        ]
    return [
        {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr",
         "end_lr": "max_lr", "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
        {"end_step": total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
         "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
    ]


def _one_cycle_value(
    t: Any,
    phases: Sequence[Mapping[str, Any]],
    values: Mapping[str, Any],
    anneal: Callable[..., Any],
    quantity: str,
    ops: _Ops,
) -> Any:
    """The ``quantity`` ('lr' or 'momentum') at step ``t``: the first phase not yet ended
    anneals between the ``values`` its keys name (torch's loop; the last phase takes the rest).
    """

    def from_phase(index: int, start_step: float) -> Any:
        phase = phases[index]

        def here() -> Any:
            pct = (t - start_step) / (phase["end_step"] - start_step)
            start, end = phase["start_" + quantity], phase["end_" + quantity]
            return anneal(values[start], values[end], pct, ops)

        if index == len(phases) - 1:
            return here()
        return ops.cond(
            t <= phase["end_step"], here, lambda: from_phase(index + 1, phase["end_step"])
        )

    return from_phase(0, 0.0)


def _one_cycle(
    values: Mapping[str, float],
    quantity: str,
    total_steps: int | None,
    epochs: int | None,
    steps_per_epoch: int | None,
    pct_start: float,
    anneal_strategy: str,
    three_phase: bool,
) -> Schedule:
    """:func:`one_cycle_lr` or :func:`one_cycle_momentum`: ``quantity`` between ``values``."""
    total_steps = _one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
    _check_one_cycle(pct_start, anneal_strategy)
    phases = _one_cycle_phases(total_steps, pct_start, three_phase)
    anneal = _ANNEALING[anneal_strategy]
    return _schedule(lambda t, ops: _one_cycle_value(t, phases, values, anneal, quantity, ops))


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """torch's ``OneCycleLR`` (Smith & Topin, 2017): up to ``max_lr``, then far below the start.

    The learning rate anneals from :math:`\\eta_{init} = \\eta_{max} / \\text{div\\_factor}` up to
    :math:`\\eta_{max}` over the first ``pct_start`` of ``total_steps``, then down to
    :math:`\\eta_{min} = \\eta_{init} / \\text{final\\_div\\_factor}` by the last step
    (``three_phase``: back to :math:`\\eta_{init}` symmetrically, then down to
    :math:`\\eta_{min}`). A phase from step :math:`a` to its last step :math:`b` anneals from
    :math:`u` to :math:`v` with :math:`p = (t - a) / (b - a)`: ``'cos'``
    :math:`v + (u - v)(1 + \\cos \\pi p) / 2`, ``'linear'`` :math:`(v - u) p + u`.

    torch raises past ``total_steps``; under ``jit`` this schedule cannot, and continues the
    last phase's curve instead.

    Args:
      max_lr: the peak learning rate.
      total_steps: the number of steps in the cycle; or give ``epochs`` and
        ``steps_per_epoch``.
      epochs: with ``steps_per_epoch``, ``total_steps = epochs * steps_per_epoch``.
      steps_per_epoch: see ``epochs``.
      pct_start: the fraction of the cycle spent increasing the learning rate (a float).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      div_factor: :math:`\\eta_{init} = \\eta_{max} / \\text{div\\_factor}`.
      final_div_factor: :math:`\\eta_{min} = \\eta_{init} / \\text{final\\_div\\_factor}`.
      three_phase: use torch's three-phase variant (the original paper's).

    Returns:
      The schedule ``step -> lr``. :func:`one_cycle_momentum` gives the momentum torch cycles
      alongside.

    Raises:
      ValueError: torch's messages, for invalid step counts, ``pct_start`` or
        ``anneal_strategy``.

    References:
      Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large
      Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2017.
    """
    initial_lr = max_lr / div_factor
    values = {"initial_lr": initial_lr, "max_lr": max_lr, "min_lr": initial_lr / final_div_factor}
    return _one_cycle(
        values, "lr", total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy,
        three_phase,
    )


def one_cycle_momentum(
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
) -> Schedule:
    """The momentum torch's ``OneCycleLR`` cycles with ``cycle_momentum=True``.

    It anneals inversely to the learning rate of :func:`one_cycle_lr`, between
    ``max_momentum`` (at the start and end) and ``base_momentum`` (at the peak learning rate).
    Use it as SGD's ``momentum`` (or Adam's :math:`\\beta_1`), e.g.
    ``inject_hyperparams(optim_jax.sgd)(lr=one_cycle_lr(...), momentum=one_cycle_momentum(...))``.

    Args:
      total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase: as for
        :func:`one_cycle_lr` (pass the same values).
      base_momentum: the momentum at the peak learning rate.
      max_momentum: the momentum at the start and the end of the cycle.

    Returns:
      The schedule ``step -> momentum``.
    """
    values = {"max_momentum": max_momentum, "base_momentum": base_momentum}
    return _one_cycle(
        values, "momentum", total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy,
        three_phase,
    )


# -- combinations ----------------------------------------------------------------------------


def sequential_lr(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """torch's ``SequentialLR``: ``schedules[i]`` from ``milestones[i-1]`` on, restarted at 0.

    :math:`\\eta_t = s_i(t - m_{i-1})` for :math:`m_{i-1} \\le t < m_i` (with :math:`m_{-1} = 0`),
    which is what torch's class gives for every scheduler but ``MultiplicativeLR`` placed after
    a milestone (torch then continues from the previous scheduler's last rate).

    Args:
      schedules: the schedules, in order, each built with the group's base learning rate.
      milestones: the steps at which the next schedule takes over, increasing.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's messages, for no schedules or a milestone count that is not one
        less than the schedule count.
    """
    schedules, milestones = list(schedules), list(milestones)
    _check_schedule_count("SequentialLR", len(schedules))
    _check_milestone_count(len(schedules), len(milestones))
    starts = [0, *milestones]

    def formula(t, ops):
        def from_schedule(index: int) -> Any:
            def here() -> Any:
                return schedules[index](t - starts[index])

            if index == len(milestones):
                return here()
            return ops.cond(t < milestones[index], here, lambda: from_schedule(index + 1))

        return from_schedule(0)

    return _schedule(formula)


def chained_scheduler(schedules: Sequence[Schedule], base_lr: float) -> Schedule:
    """torch's ``ChainedScheduler``: the product of the schedules' factors.

    :math:`\\eta_t = s_1(t) \\prod_{i > 1} s_i(t) / \\eta_0`. torch's chainable schedulers
    (``MultiplicativeLR``, ``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``,
    ``ExponentialLR``, ``PolynomialLR``, and ``CosineAnnealingLR`` with ``eta_min=0``) each
    multiply the current rate by their own step factor, so chaining them multiplies their
    factors :math:`s_i(t) / \\eta_0`. Schedulers that set the rate outright (``LambdaLR``,
    ``CyclicLR``, ``OneCycleLR``, ``CosineAnnealingWarmRestarts``) are not chainable in torch
    either.

    Args:
      schedules: the schedules, each built with the same base learning rate ``base_lr``.
      base_lr: the group's initial learning rate :math:`\\eta_0`.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's message, for no schedules.
    """
    schedules = list(schedules)
    _check_schedule_count("ChainedScheduler", len(schedules), " to be chained")

    def formula(t, ops):
        lr = schedules[0](t)
        for schedule in schedules[1:]:
            lr = lr * (schedule(t) / base_lr)
        return lr

    return _schedule(formula)


# -- ReduceLROnPlateau -----------------------------------------------------------------------


def _plateau_is_better(a: Any, best: Any, mode: str, threshold: Any, threshold_mode: str) -> Any:
    """Whether metric ``a`` improves on ``best`` by more than the threshold (torch's rule)."""
    if mode == "min" and threshold_mode == "rel":
        return a < best * (1.0 - threshold)
    if mode == "min":
        return a < best - threshold
    if threshold_mode == "rel":
        return a > best * (threshold + 1.0)
    return a > best + threshold


def _plateau_step(
    current: Any,
    best: Any,
    num_bad_epochs: Any,
    cooldown_counter: Any,
    *,
    mode: str,
    threshold: Any,
    threshold_mode: str,
    patience: Any,
    cooldown: Any,
    ops: _Ops,
) -> tuple[Any, Any, Any, Any]:
    """torch's ``ReduceLROnPlateau.step`` bookkeeping for one metric value.

    Returns:
      ``(best, num_bad_epochs, cooldown_counter, reduce)``: the new counters, and whether the
      learning rates are to be reduced now.
    """
    better = _plateau_is_better(current, best, mode, threshold, threshold_mode)
    best = ops.where(better, current, best)
    num_bad_epochs = ops.where(better, 0, num_bad_epochs + 1)
    in_cooldown = cooldown_counter > 0
    cooldown_counter = ops.where(in_cooldown, cooldown_counter - 1, cooldown_counter)
    num_bad_epochs = ops.where(in_cooldown, 0, num_bad_epochs)  # bad epochs in cooldown don't count
    reduce = num_bad_epochs > patience
    cooldown_counter = ops.where(reduce, cooldown, cooldown_counter)
    num_bad_epochs = ops.where(reduce, 0, num_bad_epochs)
    return best, num_bad_epochs, cooldown_counter, reduce


def _plateau_reduced_lr(lr: Any, factor: Any, min_lr: Any, eps: Any, ops: _Ops) -> Any:
    """``max(lr * factor, min_lr)``, unless that changes ``lr`` by ``eps`` or less."""
    new_lr = ops.maximum(lr * factor, min_lr)
    return ops.where(lr - new_lr > eps, new_lr, lr)


class ReduceLROnPlateauState(NamedTuple):
    """torch's ``ReduceLROnPlateau`` state, as arrays.

    Attributes:
      lr: the rate the next update is multiplied by (torch's ``group['lr']``).
      best: the best metric value seen.
      num_bad_epochs: values since the last improvement (reset by a reduction and in cooldown).
      cooldown_counter: values left in the cooldown after a reduction.
      last_epoch: the number of values seen.
    """

    lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array


def reduce_lr_on_plateau(
    lr: float = 1.0,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> GradientTransformationExtraArgs:
    """torch's ``ReduceLROnPlateau`` as a transform: a rate that drops when a metric stalls.

    The transform multiplies updates by a rate that drops by ``factor`` once the metric passed
    as ``update(..., value=metric)`` stops improving.

    A value is an improvement if it beats the best so far by more than the threshold: in
    ``'min'`` mode :math:`v < b (1 - \\tau)` (``'rel'``) or :math:`v < b - \\tau` (``'abs'``);
    in ``'max'`` mode :math:`v > b (1 + \\tau)` or :math:`v > b + \\tau`. After more than
    ``patience`` values without one, the rate becomes :math:`\\max(\\eta f, \\eta_{min})` (unless
    that changes it by ``eps`` or less) and the next ``cooldown`` values are ignored.

    Each update is multiplied by the rate in effect *before* its value is seen, as torch's
    loop ``optimizer.step(); scheduler.step(metric)`` uses it (optax's ``reduce_on_plateau``
    applies the new one at once). Chain it after an optimiser built with ``lr=1.0`` to make its
    ``lr`` the learning rate, e.g. ``chain(optim_jax.sgd(lr=1.0, momentum=0.9),
    reduce_lr_on_plateau(lr=0.1))``; or keep the optimiser's rate and the default ``lr=1.0``,
    which makes the state's ``lr`` a factor (``min_lr`` and ``eps`` then relative to it).

    Args:
      lr: the starting rate.
      mode: ``'min'`` (the metric should decrease) or ``'max'``.
      factor: the reduction factor, < 1.
      patience: values without improvement tolerated before a reduction.
      threshold: :math:`\\tau`, the margin of a significant improvement.
      threshold_mode: ``'rel'`` or ``'abs'``.
      cooldown: values ignored after a reduction.
      min_lr: the lower bound :math:`\\eta_{min}` of the rate.
      eps: reductions smaller than this are skipped.

    Returns:
      A :class:`~optim_jax.GradientTransformationExtraArgs` whose ``update`` requires
      ``value=`` (a scalar; under :func:`optim_jax.chain` it reaches this member as a keyword)
      and whose state is a :class:`ReduceLROnPlateauState`.

    Raises:
      ValueError: torch's messages, for ``factor >= 1`` or an unknown mode.
    """
    _check_plateau_factor(factor)
    _check_plateau_modes(mode, threshold_mode)
    dtype = numerics.scalar_dtype()

    def init(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ReduceLROnPlateauState(
            lr=jnp.asarray(lr, dtype),
            best=jnp.asarray(math.inf if mode == "min" else -math.inf, dtype),
            num_bad_epochs=count,
            cooldown_counter=count,
            last_epoch=count,
        )

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        updates = jax.tree.map(lambda u: u * numerics.like(state.lr, u), updates)
        best, num_bad_epochs, cooldown_counter, reduce = _plateau_step(
            jnp.asarray(value, dtype), state.best, state.num_bad_epochs, state.cooldown_counter,
            mode=mode, threshold=threshold, threshold_mode=threshold_mode, patience=patience,
            cooldown=cooldown, ops=_ARRAY,
        )
        new_lr = jnp.where(reduce, _plateau_reduced_lr(state.lr, factor, min_lr, eps, _ARRAY),
                           state.lr)
        return updates, ReduceLROnPlateauState(
            lr=new_lr.astype(dtype),
            best=best.astype(dtype),
            num_bad_epochs=num_bad_epochs.astype(jnp.int32),
            cooldown_counter=cooldown_counter.astype(jnp.int32),
            last_epoch=numerics.increment(state.last_epoch),
        )

    return GradientTransformationExtraArgs(init, update)


# -- stochastic weight averaging ---------------------------------------------------------------


def _check_swa_annealing(anneal_epochs: int, anneal_strategy: str) -> None:
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            "anneal_strategy must be one of 'cos' or 'linear', "
            f"instead got {anneal_strategy}"
        )
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")


def _swa_alpha(t: Any, anneal_epochs: int, anneal_strategy: str, ops: _Ops) -> Any:
    """torch's ``SWALR.anneal_func`` at ``t / anneal_epochs`` clipped to [0, 1]."""
    pct = ops.maximum(0, ops.minimum(1, t / max(1, anneal_epochs)))
    if anneal_strategy == "linear":
        return pct
    return (1 - ops.cos(math.pi * pct)) / 2


def swa_annealing(anneal_epochs: int = 10, anneal_strategy: str = "cos") -> Schedule:
    """The fraction :math:`\\alpha_t` of the way from the base rate to ``swa_lr`` of :func:`swalr`.

    .. math::
        p = \\min(1, \\max(0, t / \\max(1, E))), \\qquad
        \\alpha_t = \\frac{1 - \\cos(\\pi p)}{2} \\ (\\text{'cos'}), \\quad
        \\alpha_t = p \\ (\\text{'linear'})

    :class:`optim_jax.swa_utils.SWALR` evaluates it on the host to invert and continue torch's
    recursion; negative steps give 0.

    Args:
      anneal_epochs: :math:`E`, the number of steps of the annealing (an int >= 0).
      anneal_strategy: ``'cos'`` or ``'linear'``.

    Returns:
      The schedule ``step -> alpha``, from 0 to 1.

    Raises:
      ValueError: torch's messages, for an unknown strategy or a negative ``anneal_epochs``.
    """
    _check_swa_annealing(anneal_epochs, anneal_strategy)
    return _schedule(lambda t, ops: _swa_alpha(t, anneal_epochs, anneal_strategy, ops))


def swalr(
    base_lr: float, swa_lr: float, anneal_epochs: int = 10, anneal_strategy: str = "cos"
) -> Schedule:
    """torch's ``SWALR`` (Izmailov et al., 2018): anneal from the current rate to ``swa_lr``.

    .. math::
        \\eta_t = \\eta_{swa} \\alpha_t + \\eta_0 (1 - \\alpha_t)

    with :math:`\\alpha_t` of :func:`swa_annealing` (cosine or linear over ``anneal_epochs``
    steps, then 1: the rate stays at ``swa_lr``). Step :math:`t` is the optimizer step after
    :math:`t` calls of the class's ``step()``, as in torch's recipe, where the scheduler is
    built before training and stepped during the SWA phase only.

    :math:`\\eta_0` is the rate in effect when the annealing starts, not the optimizer's initial
    one: torch's class interpolates from the group's current ``lr``. After another schedule, pass
    its last value, e.g. ``sequential_lr([cosine_annealing_lr(lr, T), swalr(
    cosine_annealing_lr(lr, T)(m), swa_lr)], [m])``. torch's class recovers :math:`\\eta_0` from
    the current rate at every step, which matches this closed form to rounding as long as nothing
    else changes ``lr``; :class:`optim_jax.swa_utils.SWALR` does as torch does. With
    ``anneal_epochs=0`` torch's constructor sets ``swa_lr`` at once, and the first ``step()``
    again: this schedule gives :math:`\\eta_0` at step 0 (the rate another scheduler left), as
    with ``anneal_epochs=1``.

    Args:
      base_lr: :math:`\\eta_0`, the learning rate the annealing starts from.
      swa_lr: :math:`\\eta_{swa}`, the rate annealed to.
      anneal_epochs: the number of steps of the annealing (an int >= 0).
      anneal_strategy: ``'cos'`` or ``'linear'``.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's messages, for an unknown strategy or a negative ``anneal_epochs``.

    References:
      Izmailov et al., `Averaging Weights Leads to Wider Optima and Better Generalization
      <https://arxiv.org/abs/1803.05407>`_, UAI 2018.
    """
    _check_swa_annealing(anneal_epochs, anneal_strategy)

    def formula(t, ops):
        alpha = _swa_alpha(t, anneal_epochs, anneal_strategy, ops)
        return swa_lr * alpha + base_lr * (1 - alpha)

    return _schedule(formula)
