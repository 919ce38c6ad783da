"""Hyperparameter checks that raise torch.optim's own ValueError messages.

Checks run on concrete values only: a schedule, or an array traced inside ``jax.jit`` (as
:func:`optim_jax.inject_hyperparams` and the stateful classes pass them), is not checked again
at every step; its value was checked when the optimiser was built.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Unchecked(np.ndarray):
    """A 0-d hyperparameter value the checks pass over: what the stateful classes hand their
    factories once a value was checked when first given, or taken as saved or as a scheduler
    left it (torch's LinearLR can end a rounding below 0; torch checks only at construction)."""


def unchecked(value: Any, dtype: Any) -> Unchecked:
    """``value`` as a 0-d :class:`Unchecked` array of ``dtype``."""
    return np.asarray(value, dtype).view(Unchecked)


def concrete(value: Any) -> float | None:
    """The value as a Python float if it is a concrete real scalar to check, else ``None``."""
    if isinstance(value, (bool, Unchecked)):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not isinstance(
        value, jax.core.Tracer
    ):
        if np.ndim(value) == 0 and np.asarray(value).dtype.kind in "fiu":
            return float(value)
    return None


def is_numeric(value: Any) -> bool:
    """Whether ``value`` is a numeric hyperparameter: a real number or array, or a non-empty
    tuple or list of them (``betas``); booleans are options, not numbers."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array)):
        return True
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(map(is_numeric, value))


def check_type(value: Any, message: str, schedule: bool = False) -> None:
    """Raises ``TypeError`` unless ``value`` can be a numeric hyperparameter.

    A real number, a 0-d or one-element array, a tracer, and with ``schedule`` (the learning
    rate) a schedule (a callable) can; ``None``, strings, lists and other objects cannot (torch
    fails on them with a comparison TypeError at construction; without this check they would
    reach the step and fail there, or worse).
    """
    if isinstance(value, (numbers.Real, jax.core.Tracer)) or (schedule and callable(value)):
        return
    if callable(value):
        raise TypeError(
            f"{message}: a schedule (a callable) is taken for lr only; give another "
            "hyperparameter a schedule through inject_hyperparams(...)(name=schedule)")
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if np.asarray(value).dtype.kind in "biuf":
            return
        raise TypeError(f"{message}: expected a real number, got an array of dtype {value.dtype}")
    raise TypeError(f"{message}: expected a real number, got {type(value).__name__}")


def require(ok, value: Any, message: str, schedule: bool = False) -> None:
    """Raises ``TypeError`` for a value that is not a number (see :func:`check_type`), and
    ``ValueError(message)`` if ``value`` is concrete and ``ok(value)`` is false."""
    check_type(value, message, schedule)
    number = concrete(value)
    if number is not None and not ok(number):
        raise ValueError(message)


def check_lr_size(lr: Any) -> None:
    """torch's ``Tensor lr must be 1-element``: an array lr (a tensor lr) holds one value."""
    if isinstance(lr, (np.ndarray, jax.Array)) and np.size(lr) != 1:
        raise ValueError("Tensor lr must be 1-element")


def check_lr(lr: Any) -> None:
    """torch's learning-rate checks: :func:`check_lr_size`, then ``Invalid learning rate``:
    ``lr >= 0``."""
    check_lr_size(lr)
    require(lambda v: v >= 0.0, lr, f"Invalid learning rate: {lr}", schedule=True)


def check_eps(eps: Any) -> None:
    """torch's ``Invalid epsilon value`` check: ``eps >= 0``."""
    require(lambda v: v >= 0.0, eps, f"Invalid epsilon value: {eps}")


def check_weight_decay(weight_decay: Any) -> None:
    """torch's ``Invalid weight_decay value`` check: ``weight_decay >= 0``."""
    require(lambda v: v >= 0.0, weight_decay, f"Invalid weight_decay value: {weight_decay}")


def check_momentum(momentum: Any) -> None:
    """torch's ``Invalid momentum value`` check: ``momentum >= 0``."""
    require(lambda v: v >= 0.0, momentum, f"Invalid momentum value: {momentum}")


def check_betas(betas: Any) -> None:
    """``betas`` is a pair, each in ``[0, 1)`` (torch's ``Invalid beta parameter`` check)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
    for index, beta in enumerate(betas):
        require(
            lambda v: 0.0 <= v < 1.0, beta, f"Invalid beta parameter at index {index}: {beta}"
        )


def check_beta_kinds(betas: Any) -> None:
    """torch's Adam and AdamW rule: the betas are both floats or both tensors (arrays here),
    each tensor of one element."""
    arrays = [isinstance(beta, (np.ndarray, jax.Array)) for beta in betas]
    if any(arrays) and not all(arrays):
        raise ValueError("betas must be either both floats or both Tensors")
    for index, beta in enumerate(betas):
        if arrays[index] and np.size(beta) != 1:
            raise ValueError(f"Tensor betas[{index}] must be 1-element")


def check_nesterov(nesterov: bool, momentum: Any, dampening: Any) -> None:
    """Nesterov momentum needs ``momentum > 0`` and ``dampening == 0``, as torch's SGD checks."""
    if not nesterov:
        return
    m, d = concrete(momentum), concrete(dampening)
    if (m is not None and m <= 0) or (d is not None and d != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def check_adam_family(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """The checks torch's Adam-family constructors run, in torch's order."""
    check_lr(lr)
    check_eps(eps)
    check_betas(betas)
    check_weight_decay(weight_decay)


def reject_complex(params: Any, message: str) -> None:
    """Raises torch's ``RuntimeError(message)`` if a leaf of ``params`` is complex."""
    if any(np.iscomplexobj(leaf) for leaf in jax.tree.leaves(params)):
        raise RuntimeError(message)


def tree_difference(updates: Any, params: Any, dtypes: bool = False) -> str | None:
    """How ``updates`` differ from ``params``: in structure, or at the first leaf whose shape
    (with ``dtypes``, or dtype) differs, named by its path; ``None`` where they are alike.
    Shapes are static: under ``jit`` this runs once per trace."""
    given, given_def = jax.tree.flatten(updates)
    held, held_def = jax.tree.flatten(params)
    if given_def != held_def:
        return f"the gradients have structure {given_def}, the params {held_def}"

    def kind(x: Any) -> tuple:
        return (np.shape(x), jnp.result_type(x)) if dtypes else (np.shape(x),)

    if all(kind(g) == kind(p) for g, p in zip(given, held)):  # the common case: no paths made
        return None

    def shown(x: Any) -> str:
        shape = list(np.shape(x))
        return f"{jnp.dtype(jnp.result_type(x)).name}{shape}" if dtypes else f"of shape {shape}"

    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(updates)[0]]
    path, g, p = next((path, g, p) for path, g, p in zip(paths, given, held) if kind(g) != kind(p))
    return f"the gradient at {jax.tree_util.keystr(path)} is {shown(g)}, its param {shown(p)}"
