"""The 1cycle policy: torch's ``OneCycleLR`` rate and the momentum it moves inversely.

The stateful ``OneCycleLR`` evaluates the same pieces on the host: :func:`one_cycle_phases`,
:data:`ANNEALING` and :func:`one_cycle_value`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from optim_jax.schedules.arithmetic import OUTRIGHT, Ops, Schedule, from_formula, with_chaining
from optim_jax.schedules.checks import check_one_cycle, one_cycle_total_steps


def _annealing_cos(start: Any, end: Any, pct: Any, ops: Ops) -> Any:
    """Cosine anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1 (torch's order)."""
    cos_out = ops.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _annealing_linear(start: Any, end: Any, pct: Any, ops: Ops) -> Any:
    """Linear anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1 (torch's order)."""
    return (end - start) * pct + start


ANNEALING = {"cos": _annealing_cos, "linear": _annealing_linear}
"""The anneal function of each ``anneal_strategy``, by name."""


def one_cycle_phases(total_steps: int, pct_start: float, three_phase: bool) -> list[dict]:
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


def one_cycle_value(
    t: Any,
    phases: Sequence[Mapping[str, Any]],
    values: Mapping[str, Any],
    anneal: Callable[..., Any],
    quantity: str,
    ops: Ops,
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
    total_steps = one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
    check_one_cycle(pct_start, anneal_strategy)
    phases = one_cycle_phases(total_steps, pct_start, three_phase)
    anneal = ANNEALING[anneal_strategy]
    return with_chaining(
        from_formula(lambda t, ops: one_cycle_value(t, phases, values, anneal, quantity, ops)),
        OUTRIGHT)


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
