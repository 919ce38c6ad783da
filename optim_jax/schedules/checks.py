"""Argument checks of the schedules, raising torch's exceptions with torch's messages.

The pure schedules and the stateful classes of :mod:`optim_jax.lr_scheduler` share them, so that
a bad argument fails the same way on both faces and as it does in torch.
"""

from __future__ import annotations

from typing import Any, Callable


def check_lr_lambda(lr_lambda: Any) -> None:
    """LambdaLR's and MultiplicativeLR's check: ``lr_lambda`` is callable."""
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")


def check_constant_factor(factor: float) -> None:
    """ConstantLR's check: ``factor`` is in [0, 1]."""
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")


def check_linear_factors(start_factor: float, end_factor: float) -> None:
    """LinearLR's check: ``start_factor`` is in (0, 1], ``end_factor`` in [0, 1]."""
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal "
            "to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")


def check_warm_restarts(T_0: int, T_mult: int, eta_min: float) -> None:
    """CosineAnnealingWarmRestarts' check: ints ``T_0, T_mult >= 1``, a number ``eta_min``."""
    if T_0 <= 0 or not isinstance(T_0, int):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not isinstance(T_mult, int):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not isinstance(eta_min, (float, int)):
        raise ValueError(
            f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
        )


def check_cyclic_mode(mode: str, scale_fn: Callable | None) -> None:
    """CyclicLR's check: ``mode`` is a built-in one, unless ``scale_fn`` replaces it."""
    if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")


def one_cycle_total_steps(
    total_steps: int | None, epochs: int | None, steps_per_epoch: int | None
) -> int:
    """OneCycleLR's step count: ``total_steps``, else ``epochs * steps_per_epoch``, checked."""
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


def check_one_cycle(pct_start: float, anneal_strategy: str) -> None:
    """OneCycleLR's check: ``pct_start`` is a float in [0, 1], ``anneal_strategy`` known."""
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            "anneal_strategy must be one of 'cos' or 'linear', instead got "
            f"{anneal_strategy}"
        )


def check_schedule_count(name: str, count: int, purpose: str = "") -> None:
    """SequentialLR's and ChainedScheduler's check: at least one schedule (``name``'s message)."""
    if count < 1:
        raise ValueError(
            f"{name} expects at least one scheduler{purpose}, but got no scheduler."
        )


def check_milestone_count(schedule_count: int, milestone_count: int) -> None:
    """SequentialLR's check: one milestone fewer than schedules."""
    if milestone_count != schedule_count - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more "
            f"than the number of milestone points, but got number of schedulers "
            f"{schedule_count} and the number of milestones to be equal to {milestone_count}"
        )


def check_plateau_factor(factor: float) -> None:
    """ReduceLROnPlateau's check: ``factor < 1``."""
    if factor >= 1.0:
        raise ValueError("Factor should be < 1.0.")


def check_plateau_modes(mode: str, threshold_mode: str) -> None:
    """ReduceLROnPlateau's check: ``mode`` is 'min' or 'max', ``threshold_mode`` 'rel' or 'abs'."""
    if mode not in {"min", "max"}:
        raise ValueError("mode " + mode + " is unknown!")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError("threshold mode " + threshold_mode + " is unknown!")
