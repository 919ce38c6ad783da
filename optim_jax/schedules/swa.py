"""Stochastic weight averaging's schedule: torch's ``SWALR``, annealing to a constant rate.

:func:`swa_annealing` is the fraction of the way annealed, which the stateful ``SWALR`` inverts
on the host to continue torch's recursion.
"""

from __future__ import annotations

import math
from typing import Any

from optim_jax.schedules.arithmetic import Ops, Schedule, from_formula


def _check_swa_annealing(anneal_epochs: int, anneal_strategy: str) -> None:
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            "anneal_strategy must be one of 'cos' or 'linear', "
            f"instead got {anneal_strategy}"
        )
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")


def _swa_alpha(t: Any, anneal_epochs: int, anneal_strategy: str, ops: Ops) -> Any:
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
    return from_formula(lambda t, ops: _swa_alpha(t, anneal_epochs, anneal_strategy, ops))


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

    return from_formula(formula)
