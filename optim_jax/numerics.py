"""Scalar and elementwise helpers that reproduce torch.optim's arithmetic.

torch evaluates per-step scalars (bias corrections, step sizes) in float64 on the host and casts
them into each tensor's dtype inside the kernel. Here they are evaluated in the widest float JAX
has enabled (float64 under ``jax_enable_x64``, else float32, using forms that stay accurate for
decay rates near 1), and cast to each leaf's dtype where they meet it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
    """``start + weight * (end - start)`` with torch's two-sided formula for rounding parity.

    bfloat16 and float16 are computed in float32 and rounded once, as torch's lerp kernel
    computes them (its weight stays a float32 too).
    """
    if is_half(start.dtype):
        wide = jnp.float32
        return lerp(start.astype(wide), end.astype(wide), weight).astype(start.dtype)
    diff = end - start
    value = concrete(weight)
    weight = like(weight, start)
    if value is not None:
        return start + weight * diff if abs(value) < 0.5 else end - diff * (1 - weight)
    # Traced weight: pick torch's branch with scalar selects, one multiply-add per element.
    from_start, coef = lerp_terms(weight)
    return jnp.where(from_start, start, end) + coef * diff


def is_half(dtype: Any) -> bool:
    """Whether ``dtype`` is a 16-bit float (bfloat16, float16), which torch's kernels compute in
    float32."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize < 4


def lerp_terms(weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch's lerp branch for a traced ``weight`` (already in the leaves' dtype), as scalars.

    Returns:
      ``(from_start, coef)``: the lerp is ``base + coef * (end - start)`` with ``base`` the
      start where ``from_start`` (``|weight| < 0.5``: ``coef = weight``), else the end
      (``coef = -(1 - weight)``; ``end + (-(1 - w)) * diff`` is bit-identical to torch's
      ``end - diff * (1 - w)``).
    """
    from_start = jnp.abs(weight) < 0.5
    return from_start, jnp.where(from_start, weight, -(1 - weight))


def zeros_like(leaf: jax.Array, dtype: Any = None) -> jax.Array:
    """Zeros shaped like ``leaf``, placed with the same sharding when ``leaf`` is committed.

    An uncommitted leaf (a fresh ``jnp`` array) gets uncommitted zeros: committing them would
    make the first step's inputs mixed and the next one's not, so jit would compile twice.
    """
    if isinstance(leaf, jax.core.Tracer) or not getattr(leaf, "committed", False):
        return jnp.zeros_like(leaf, dtype=dtype)
    return jnp.zeros_like(leaf, dtype=dtype, device=leaf.sharding)


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is a Python (not array) zero, so a block can be left out of a chain.

    Arrays never count, even concrete ones: a transform built from an array hyperparameter
    must have the same state structure at ``init`` as under ``jit``, whatever the value.
    """
    return isinstance(value, (int, float, np.generic)) and value == 0


# -- torch's Python floats beside its 0-d tensors ---------------------------------------------


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a + b`` and its rounding error, exactly (Knuth's TwoSum; additions only, so XLA's
    multiply-add fusion cannot touch it)."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x`` as a high part of 12 significant bits plus the rest (at most 12 bits), so that
    products of parts are exact in float32."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFF000)
    high = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return high, x - high


def _two_prod(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a * b`` and its rounding error, exactly (Dekker), for float32. Every partial product
    is exact, so a fused multiply-add XLA may form rounds the same as the separate operations."""
    p = a * b
    a1, a2 = _split(a)
    b1, b2 = _split(b)
    return p, (((a1 * b1 - p) + a1 * b2) + a2 * b1) + a2 * b2


class Mixed(NamedTuple):
    """A scalar as torch's Python code holds it: a Python float, or a 0-d tensor.

    torch's L-BFGS mixes the two: its step length and the line search's bounds are Python
    floats (float64) until they meet a tensor (a directional derivative, a cubic's minimiser),
    and from then on float32 tensors if the params are float32. An operation of two floats is
    float64 arithmetic; one with a tensor rounds the float to the tensor's dtype first and the
    result to it. ``Mixed`` follows that, with a flag per value. Without ``jax_enable_x64``
    float64 does not exist inside a compiled call, so a float is kept as a double-float
    ``hi + lo`` of two numbers in the params' dtype (about 48 significant bits for float32;
    error-free transformations, no float64), and its value as a tensor sees it is ``hi``, the
    nearest number in that dtype. For float64 params both kinds are plain float64 (so are
    other dtypes, which have no double-float here).

    Operators ``+ - * /`` and unary ``-`` combine ``Mixed`` values and Python numbers; Python
    numbers are floats (host kind).

    Attributes:
      hi: the value rounded to the params' dtype (a tensor's value, exactly).
      lo: the rest of a float, ``value - hi``; zero for tensors and for float64.
      tensor: whether torch holds it as a tensor.
    """

    hi: jax.Array
    lo: jax.Array
    tensor: jax.Array

    @staticmethod
    def host(value: Any, dtype: Any) -> "Mixed":
        """A Python float, or an array's value taken as one (float64 arrays keep their
        precision in ``lo``), as ``Mixed`` of ``dtype``."""
        dtype = jnp.dtype(dtype)
        if isinstance(value, (int, float, np.floating)):  # split on the host, in float64
            wide = np.float64(value)
            hi = wide.astype(dtype)
            lo = np.zeros((), dtype) if dtype == np.float64 else (wide - hi).astype(dtype)
            return Mixed(jnp.asarray(hi), jnp.asarray(lo), jnp.zeros((), bool))
        wide = jnp.asarray(value)
        hi = wide.astype(dtype)
        if wide.dtype.itemsize > dtype.itemsize:
            lo = (wide - hi.astype(wide.dtype)).astype(dtype)
        else:
            lo = jnp.zeros_like(hi)
        return Mixed(hi, lo, jnp.zeros(jnp.shape(hi), bool))

    @staticmethod
    def of_tensor(value: jax.Array) -> "Mixed":
        """A 0-d tensor's value as ``Mixed``."""
        return Mixed(value, jnp.zeros_like(value), jnp.ones(jnp.shape(value), bool))

    def _like(self, other: Any) -> "Mixed":
        return other if isinstance(other, Mixed) else Mixed.host(other, self.hi.dtype)

    def _combine(self, other: Any, tensor_op, host_op) -> "Mixed":
        other = self._like(other)
        as_tensor = tensor_op(self.hi, other.hi)
        if self.hi.dtype != jnp.float32:  # float64: both kinds are float64 (bf16: plain too)
            return Mixed(as_tensor, self.lo, self.tensor | other.tensor)
        hi, lo = host_op(self, other)
        tensor = self.tensor | other.tensor
        return Mixed(jnp.where(tensor, as_tensor, hi), jnp.where(tensor, 0, lo), tensor)

    def __add__(self, other: Any) -> "Mixed":
        def host(a, b):
            s, e = _two_sum(a.hi, b.hi)
            return _two_sum(s, e + (a.lo + b.lo))

        return self._combine(other, jnp.add, host)

    def __neg__(self) -> "Mixed":
        return Mixed(-self.hi, -self.lo, self.tensor)

    def __sub__(self, other: Any) -> "Mixed":
        return self + (-self._like(other))

    def __mul__(self, other: Any) -> "Mixed":
        def host(a, b):
            p, e = _two_prod(a.hi, b.hi)
            return _two_sum(p, e + (a.hi * b.lo + a.lo * b.hi))

        return self._combine(other, jnp.multiply, host)

    def __truediv__(self, other: Any) -> "Mixed":
        def host(a, b):
            q = a.hi / b.hi
            r = a - b * Mixed.host(q, q.dtype)  # the remainder a - q b, nearly exact
            return _two_sum(q, r.hi / b.hi)

        return self._combine(other, jnp.divide, host)

    def __radd__(self, other: Any) -> "Mixed":
        return self._like(other) + self

    def __rsub__(self, other: Any) -> "Mixed":
        return self._like(other) - self

    def __rmul__(self, other: Any) -> "Mixed":
        return self._like(other) * self

    def __rtruediv__(self, other: Any) -> "Mixed":
        return self._like(other) / self

    def __abs__(self) -> "Mixed":
        negative = (self.hi < 0) | ((self.hi == 0) & (self.lo < 0))
        return Mixed(jnp.where(negative, -self.hi, self.hi), jnp.where(negative, -self.lo, self.lo),
                     self.tensor)

    def lt(self, other: Any) -> jax.Array:
        """``self < other`` as torch compares: in the tensor's dtype if either is a tensor."""
        other = self._like(other)
        host = (self.hi < other.hi) | ((self.hi == other.hi) & (self.lo < other.lo))
        return jnp.where(self.tensor | other.tensor, self.hi < other.hi, host)

    def le(self, other: Any) -> jax.Array:
        """``self <= other`` as torch compares."""
        other = self._like(other)
        host = (self.hi < other.hi) | ((self.hi == other.hi) & (self.lo <= other.lo))
        return jnp.where(self.tensor | other.tensor, self.hi <= other.hi, host)

    def at(self, index: Any) -> "Mixed":
        """Element ``index`` of a ``Mixed`` array."""
        return Mixed(self.hi[index], self.lo[index], self.tensor[index])

    def set(self, index: Any, value: "Mixed") -> "Mixed":
        """A copy with element ``index`` replaced by ``value``."""
        return Mixed(self.hi.at[index].set(value.hi), self.lo.at[index].set(value.lo),
                     self.tensor.at[index].set(value.tensor))


def select(condition: jax.Array, a: Any, b: Any) -> Any:
    """``a`` where ``condition`` else ``b``, field by field (``Mixed`` values, pytrees)."""
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)


def py_max(a: Mixed, b: Mixed) -> Mixed:
    """Python's ``max(a, b)``: ``b`` only if ``b > a`` (NaN and ties as in torch)."""
    return select(a.lt(b), b, a)


def py_min(a: Mixed, b: Mixed) -> Mixed:
    """Python's ``min(a, b)``: ``b`` only if ``b < a``."""
    return select(b.lt(a), b, a)


def stack(values: list) -> Mixed:
    """``Mixed`` scalars stacked into one ``Mixed`` array."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *values)
