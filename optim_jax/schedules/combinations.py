"""Schedules combined: torch's ``SequentialLR`` and ``ChainedScheduler``.

:func:`sequential_lr` runs schedules one after another; :func:`chained_scheduler` applies
them to the rate in turn, as torch's chain does.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from optim_jax.schedules.arithmetic import HOST, Ops, Schedule, chaining_of, from_formula
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
    """torch's ``ChainedScheduler``: each schedule acts in turn on the rate left before it.

    Most of torch's schedulers multiply the group's rate by their own step's factor
    (``MultiplicativeLR``, ``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``,
    ``ExponentialLR``, ``PolynomialLR``), so that a chain of them is the product of their
    factors, :math:`\\eta_t = s_1(t) \\prod_{i > 1} s_i(t) / \\eta_0`. Two kinds do more:

    - ``LambdaLR``, ``CyclicLR``, ``OneCycleLR`` and ``CosineAnnealingWarmRestarts`` set the
      rate outright at every step, from the base rate, and what came before them is lost;
    - ``CosineAnnealingLR`` multiplies, by 0 at each of its minima (:math:`t = T_{max}`
      modulo :math:`2 T_{max}`), and at the step after one it adds its rise to the rate
      instead.

    A step of the chain maps the rate affinely. Since the latest step :math:`z` whose map
    ignores the rate it is given (a minimum, or an outright schedule), the rate is that step's
    result carried through step :math:`z + 1` (where a cosine may add to it) and then the
    product of every schedule's factors :math:`s_i(t) / s_i(z + 1)` since.

    Args:
      schedulers: the schedules, each built with the same base learning rate ``base_lr``
        (torch's argument name). A schedule of your own counts as factors.
      base_lr: the group's initial learning rate :math:`\\eta_0`.

    Returns:
      The schedule ``step -> lr``.

    Raises:
      ValueError: torch's message, for no schedules; for a ``CosineAnnealingLR`` with
        ``eta_min`` other than 0, whose recursion in torch depends on the rate the others set
        (:class:`optim_jax.lr_scheduler.ChainedScheduler` follows it).
    """
    schedulers = list(schedulers)
    check_schedule_count("ChainedScheduler", len(schedulers), " to be chained")
    roles = [chaining_of(schedule) for schedule in schedulers]
    for index, role in enumerate(roles):
        if role.kind == "restarts" and role.eta_min != 0:
            raise ValueError(
                f"chained_scheduler: schedulers[{index}] is a cosine annealing with eta_min="
                f"{role.eta_min}; chained, torch's recursion then depends on the rate the others "
                "set, which no combination of the schedules gives: use "
                "optim_jax.lr_scheduler.ChainedScheduler")
    if all(role.kind == "factor" for role in roles):
        def product(t, ops):
            lr = schedulers[0](t)
            for schedule in schedulers[1:]:
                lr = lr * (schedule(t) / base_lr)
            return lr

        return from_formula(product)
    return from_formula(functools.partial(_chain_with_resets, schedulers, roles, base_lr))


def _chain_with_resets(schedulers: list, roles: list, base_lr: float, t: Any, ops: Ops) -> Any:
    """:func:`chained_scheduler`'s rate at ``t`` for a chain holding an outright schedule or a
    cosine."""

    def at(index: int, step: Any) -> Any:  # the base rate before step 0
        if ops is HOST:
            return base_lr if step < 0 else schedulers[index](step)
        return ops.where(step < 0, base_lr, schedulers[index](ops.maximum(step, 0)))

    def ratio(index: int, later: Any, earlier: Any) -> Any:
        """Schedule ``index``'s factors from ``earlier`` to ``later`` (1 where both are 0:
        a schedule that reached 0 stays there with factor 1)."""
        before = at(index, earlier)
        return ops.cond(before == 0, lambda: 1.0, lambda: at(index, later) / before)

    def restarts(role: Any, step: Any) -> Any:
        return (step >= role.period + 1) & ((step - role.period - 1) % (2 * role.period) == 0)

    def through(step: Any, rate: Any) -> Any:
        """``rate`` carried through the chain's step ``step``."""
        for index, role in enumerate(roles):
            if role.kind == "outright":
                rate = at(index, step)
            elif role.kind == "restarts":
                rate = ops.where(restarts(role, step), rate + at(index, step),
                                 rate * ratio(index, step, step - 1))
            else:
                rate = rate * ratio(index, step, step - 1)
        return rate

    # The latest step before t whose map ignores the rate it is given.
    last = -1
    for role in roles:
        if role.kind == "outright":
            last = ops.maximum(last, t - 1)
        elif role.kind == "restarts":
            period = role.period
            minimum = period + 2 * period * ((t - 1 - period) // (2 * period))
            last = ops.where(t - 1 >= period, ops.maximum(last, minimum), last)
    start = last + 1
    carried = ops.cond(last >= 0, lambda: through(start, through(last, 0.0)),
                       lambda: through(0, base_lr))
    for index in range(len(schedulers)):
        carried = carried * ratio(index, t, start)
    return carried
