"""Scalar and elementwise helpers that reproduce torch.optim's arithmetic.

torch evaluates per-step scalars (bias corrections, step sizes) in float64 on the host and casts
them into each tensor's dtype inside the kernel. Here they are evaluated in the widest float JAX
has enabled (float64 under ``jax_enable_x64``, else float32, using forms that stay accurate for
decay rates near 1), and cast to each leaf's dtype where they meet it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.validation import concrete


def scalar_dtype() -> jnp.dtype:
    """The dtype per-step scalars are computed in: float64 with x64 enabled, else float32."""
    return jnp.result_type(float)


def resolve(hyperparam: Any, count: jax.Array) -> Any:
    """A hyperparameter's value at step ``count``: schedules are called, constants returned."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def like(scalar: Any, leaf: jax.Array) -> Any:
    """``scalar`` ready to meet ``leaf``: Python numbers stay weakly typed, arrays take its dtype."""
    if isinstance(scalar, np.generic):
        scalar = scalar.item()
    if isinstance(scalar, (int, float)):
        return scalar
    return jnp.asarray(scalar).astype(leaf.dtype)


def lr_operand(value: Any, lr: Any) -> Any:
    """``value`` as it meets ``lr`` in an lr-derived scalar (``lr / bias_correction1``, ...).

    torch forms these scalars in Python floats (float64 on the host) when ``lr`` is a float, and
    as 0-d tensor arithmetic in ``lr``'s dtype when it is a tensor: the float operand is rounded
    to that dtype first and every operation rounds to it. An array ``lr`` here plays torch's
    tensor lr: ``value`` (a host float or a scalar array) is cast to its dtype, so that JAX's
    arithmetic with ``lr`` then rounds as torch's does. With a Python number ``lr`` it is
    returned unchanged and the arithmetic stays in the scalar dtype.

    Args:
      value: the other operand, e.g. ``1 - beta1**t`` or ``weight_decay``.
      lr: the learning rate: a Python number, or an array (concrete or traced).

    Returns:
      ``value`` in ``lr``'s dtype for a floating-point array ``lr``, else ``value`` itself.
    """
    if isinstance(lr, (jax.Array, np.ndarray)) and jnp.issubdtype(lr.dtype, jnp.floating):
        return jnp.asarray(value).astype(lr.dtype)
    return value


def step_scale(lr: Any, count: jax.Array, divisor: Any, multiplier: Any = 1.0) -> Any:
    """The scalar a core multiplies its direction by, for torch's ``lr * multiplier / divisor``.

    torch's step sizes (``lr / (1 - beta1**t)``, NAdam's ``-lr * (1 - mu) / (1 - mu_product)``,
    SparseAdam's ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)``) are formed left to right from
    the (negated) lr, the multiplier and the divisor, in :func:`lr_operand`'s precision.

    Args:
      lr: the learning rate (float, array or schedule, evaluated at ``count``), or ``None`` when
        a later block applies it.
      count: updates done before this one.
      divisor: the host scalar the product is divided by.
      multiplier: the host scalar lr is multiplied by first.

    Returns:
      ``(-lr * multiplier) / divisor`` formed as torch forms it, or ``multiplier / divisor``
      for ``lr=None``.
    """
    if lr is None:
        return multiplier / divisor
    step_lr = resolve(lr, count)
    return (-step_lr * lr_operand(multiplier, step_lr)) / lr_operand(divisor, step_lr)


def decay_factor(lr: Any, weight_decay: Any) -> Any:
    """torch's decoupled decay factor ``1 - lr * weight_decay``, formed as torch forms it.

    Args:
      lr: the learning rate (a Python number, or an array standing for a tensor lr).
      weight_decay: :math:`\\lambda`.

    Returns:
      The factor: a float64 host value (or scalar-dtype array) for a Python ``lr``, an array
      in ``lr``'s dtype for an array ``lr`` (:func:`lr_operand`).
    """
    return 1 - lr * lr_operand(weight_decay, lr)


def decayed(update: jax.Array, param: jax.Array, factor: Any) -> jax.Array:
    """``update + (factor - 1) * param``: torch's ``param.mul_(factor)`` folded into an update.

    ``factor`` is rounded to the param's dtype first, as torch's kernel rounds the scalar it
    multiplies by; ``factor - 1`` is then exact (Sterbenz), so only the product rounds.
    """
    return update + (jnp.asarray(factor).astype(param.dtype) - 1) * param


def increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


def bias_correction(decay: Any, count: jax.Array) -> jax.Array:
    """``1 - decay**count``, computed as ``-expm1(count * log(decay))``.

    The direct form loses most of its digits in float32 when ``decay`` is near 1 (``1 - 0.999``
    keeps only four significant digits); this one keeps them, so float32 runs track torch's
    float64 host arithmetic.
    """
    dtype = scalar_dtype()
    value = concrete(decay)
    if value is not None:
        with np.errstate(divide="ignore"):
            log_decay = jnp.asarray(np.log(np.float64(value)), dtype)
    else:
        log_decay = jnp.log(jnp.asarray(decay, dtype))
    return -jnp.expm1(count.astype(dtype) * log_decay)


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight * (end - start)`` with torch's two-sided formula for rounding parity."""
    diff = end - start
    value = concrete(weight)
    weight = like(weight, start)
    if value is not None:
        return start + weight * diff if abs(value) < 0.5 else end - diff * (1 - weight)
    # Traced weight: pick torch's branch with scalar selects, one multiply-add per element.
    # ``end + (-(1 - w)) * diff`` is bit-identical to ``end - diff * (1 - w)``.
    small = jnp.abs(weight) < 0.5
    base = jnp.where(small, start, end)
    return base + jnp.where(small, weight, -(1 - weight)) * diff


def zeros_like(leaf: jax.Array, dtype: Any = None) -> jax.Array:
    """Zeros shaped like ``leaf``, placed with the same sharding when ``leaf`` is concrete."""
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.core.Tracer) or sharding is None:
        return jnp.zeros_like(leaf, dtype=dtype)
    return jnp.zeros_like(leaf, dtype=dtype, device=sharding)


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is a Python (not array) zero, so a block can be left out of a chain.

    Arrays never count, even concrete ones: a transform built from an array hyperparameter
    must have the same state structure at ``init`` as under ``jit``, whatever the value.
    """
    return isinstance(value, (int, float, np.generic)) and value == 0
