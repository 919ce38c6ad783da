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
