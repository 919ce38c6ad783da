"""torch's ``ReduceLROnPlateau`` as a pure transform: a rate that drops when a metric stalls.

It depends on the metric values seen, so it is a transform with state rather than a schedule.
The stateful ``ReduceLROnPlateau`` runs the same bookkeeping on the host:
:func:`plateau_step` and :func:`plateau_reduced_lr`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import numerics
from optim_jax.base import GradientTransformationExtraArgs
from optim_jax.schedules.arithmetic import ARRAY, Ops
from optim_jax.schedules.checks import check_plateau_factor, check_plateau_modes


def _plateau_is_better(a: Any, best: Any, mode: str, threshold: Any, threshold_mode: str) -> Any:
    """Whether metric ``a`` improves on ``best`` by more than the threshold (torch's rule)."""
    if mode == "min" and threshold_mode == "rel":
        return a < best * (1.0 - threshold)
    if mode == "min":
        return a < best - threshold
    if threshold_mode == "rel":
        return a > best * (threshold + 1.0)
    return a > best + threshold


def plateau_step(
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
    ops: Ops,
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


def plateau_reduced_lr(lr: Any, factor: Any, min_lr: Any, eps: Any, ops: Ops) -> Any:
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
    check_plateau_factor(factor)
    check_plateau_modes(mode, threshold_mode)
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
        best, num_bad_epochs, cooldown_counter, reduce = plateau_step(
            jnp.asarray(value, dtype), state.best, state.num_bad_epochs, state.cooldown_counter,
            mode=mode, threshold=threshold, threshold_mode=threshold_mode, patience=patience,
            cooldown=cooldown, ops=ARRAY,
        )
        new_lr = jnp.where(reduce, plateau_reduced_lr(state.lr, factor, min_lr, eps, ARRAY),
                           state.lr)
        return updates, ReduceLROnPlateauState(
            lr=new_lr.astype(dtype),
            best=best.astype(dtype),
            num_bad_epochs=num_bad_epochs.astype(jnp.int32),
            cooldown_counter=cooldown_counter.astype(jnp.int32),
            last_epoch=numerics.increment(state.last_epoch),
        )

    return GradientTransformationExtraArgs(init, update)
