"""Schedules combined: torch's ``SequentialLR`` and ``ChainedScheduler``.

:func:`sequential_lr` runs schedules one after another; :func:`chained_scheduler` multiplies
their factors.
"""

from __future__ import annotations

from typing import Any, Sequence

from optim_jax.schedules.arithmetic import Schedule, from_formula
from optim_jax.schedules.checks import check_milestone_count, check_schedule_count


def sequential_lr(schedulers: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """torch's ``SequentialLR``: ``schedulers[i]`` from ``milestones[i-1]`` on, restarted at 0.

    :math:`\\eta_t = s_i(t - m_{i-1})` for :math:`m_{i-1} \\le t < m_i` (with :math:`m_{-1} = 0`),
    which is what torch's class gives for every scheduler but ``MultiplicativeLR`` placed after
    a milestone (torch then continues from the previous scheduler's last rate).

    Args:
      schedulers: the schedules, in order, each built with the group's base learning rate
        (torch's argument name).
      milestones: the steps at which the next schedule takes over, increasing.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's messages, for no schedules or a milestone count that is not one
        less than the schedule count.
    """
    schedulers, milestones = list(schedulers), list(milestones)
    check_schedule_count("SequentialLR", len(schedulers))
    check_milestone_count(len(schedulers), len(milestones))
    starts = [0, *milestones]

    def formula(t, ops):
        def from_schedule(index: int) -> Any:
            def here() -> Any:
                return schedulers[index](t - starts[index])

            if index == len(milestones):
                return here()
            return ops.cond(t < milestones[index], here, lambda: from_schedule(index + 1))

        return from_schedule(0)

    return from_formula(formula)


def chained_scheduler(schedulers: Sequence[Schedule], base_lr: float) -> Schedule:
    """torch's ``ChainedScheduler``: the product of the schedules' factors.

    :math:`\\eta_t = s_1(t) \\prod_{i > 1} s_i(t) / \\eta_0`. torch's chainable schedulers
    (``MultiplicativeLR``, ``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``,
    ``ExponentialLR``, ``PolynomialLR``, and ``CosineAnnealingLR`` with ``eta_min=0``) each
    multiply the current rate by their own step factor, so chaining them multiplies their
    factors :math:`s_i(t) / \\eta_0`. Schedulers that set the rate outright (``LambdaLR``,
    ``CyclicLR``, ``OneCycleLR``, ``CosineAnnealingWarmRestarts``) are not chainable in torch
    either.

    Args:
      schedulers: the schedules, each built with the same base learning rate ``base_lr``
        (torch's argument name).
      base_lr: the group's initial learning rate :math:`\\eta_0`.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's message, for no schedules.
    """
    schedulers = list(schedulers)
    check_schedule_count("ChainedScheduler", len(schedulers), " to be chained")

    def formula(t, ops):
        lr = schedulers[0](t)
        for schedule in schedulers[1:]:
            lr = lr * (schedule(t) / base_lr)
        return lr

    return from_formula(formula)
