"""Cyclical schedules: torch's ``CyclicLR`` rate and the momentum it cycles inversely.

The stateful ``CyclicLR`` evaluates the same pieces on the host: :func:`cyclic_sizes`,
:func:`cyclic_builtin_scale` and :func:`cyclic_height`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from optim_jax.schedules.arithmetic import OUTRIGHT, Ops, Schedule, from_formula, with_chaining
from optim_jax.schedules.checks import check_cyclic_mode


def _triangular_scale(x: Any) -> float:
    return 1.0


def _triangular2_scale(x: Any) -> Any:
    return 1 / (2.0 ** (x - 1))


def _exp_range_scale(gamma: float, x: Any) -> Any:
    return gamma**x


def cyclic_builtin_scale(mode: str, gamma: float) -> tuple[Callable[[Any], Any], str]:
    """A built-in mode's scale function and what it is evaluated on ('cycle', 'iterations')."""
    if mode == "triangular":
        return _triangular_scale, "cycle"
    if mode == "triangular2":
        return _triangular2_scale, "cycle"
    return functools.partial(_exp_range_scale, gamma), "iterations"


def cyclic_sizes(step_size_up: float, step_size_down: float | None) -> tuple[float, float]:
    """torch's ``total_size`` and ``step_ratio`` (the rising fraction of a cycle)."""
    step_size_up = float(step_size_up)
    step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
    total_size = step_size_up + step_size_down
    return total_size, step_size_up / total_size


def cyclic_height(
    t: Any,
    low: Any,
    high: Any,
    total_size: float,
    step_ratio: float,
    scale_fn: Callable[[Any], Any],
    scale_mode: str,
    ops: Ops,
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
    check_cyclic_mode(mode, scale_fn)
    total_size, step_ratio = cyclic_sizes(step_size_up, step_size_down)
    if scale_fn is None:
        scale_fn, scale_mode = cyclic_builtin_scale(mode, gamma)

    def formula(t, ops):
        height = cyclic_height(t, low, high, total_size, step_ratio, scale_fn, scale_mode, ops)
        return low + height if rising else high - height

    return with_chaining(from_formula(formula), OUTRIGHT)


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
