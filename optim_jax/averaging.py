"""Weight averaging, pure: stochastic weight averaging (SWA) and exponential moving averages (EMA).

An average of the parameters along the training trajectory often generalises better than the
last iterate: SWA (Izmailov et al., 2018) averages the iterates of a late phase uniformly; an
EMA (Polyak averaging with exponential weights) tracks the recent ones, as diffusion models,
detectors and timm's ``ModelEmaV3`` do. These are the averages of torch's
``torch.optim.swa_utils`` as jittable functions over pytrees::

    averager = optim_jax.ema(decay=0.999)        # or optim_jax.swa()
    avg_state = averager.init(params)
    ...                                          # after each optimizer step:
    avg_state = averager.update(params, avg_state)
    eval_params = avg_state.average

The state, :class:`AveragingState`, is a pytree of arrays (the average, shaped, typed and
sharded like the params, and the count of models averaged), so ``update`` jits (one compiled
call per update, with ``donate_argnums=1`` to reuse the old average's buffers), vmaps, shards
and checkpoints like the params. As in torch's ``AveragedModel``, the first update copies the
params (``count == 0``) and the later ones average them in; every leaf keeps its dtype (integer
leaves are averaged in floating point and truncated back, as torch's in-place copy does).
:mod:`optim_jax.swa_utils` builds torch's stateful ``AveragedModel`` on these functions.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import numerics
from optim_jax.base import PyTree
from optim_jax.sharding import place_state

__all__ = [
    "AveragingState",
    "WeightAveraging",
    "check_decay",
    "ema",
    "ema_average",
    "ema_formula",
    "ema_warmup",
    "swa",
    "swa_average",
    "swa_formula",
    "weight_averaging",
]

AverageFn = Callable[[PyTree, PyTree, jax.Array], PyTree]
"""``average_fn(average, params, count) -> new average``: folds ``params`` into an average of
``count`` models (``count >= 1``)."""


class AveragingState(NamedTuple):
    """The state of a :class:`WeightAveraging`.

    Attributes:
      average: the averaged params, a pytree like the params (torch's ``AveragedModel.module``).
      count: the number of models averaged so far (torch's ``n_averaged``), an int32 scalar.
    """

    average: PyTree
    count: jax.Array


class WeightAveraging(NamedTuple):
    """A pair of pure functions that maintain an average of the params.

    Attributes:
      init: ``init(params) -> AveragingState``, the average starting as a copy of ``params``
        (not yet counted: the first ``update`` replaces it).
      update: ``update(params, state) -> AveragingState``, ``params`` folded into the average.
    """

    init: Callable[[PyTree], AveragingState]
    update: Callable[[PyTree, AveragingState], AveragingState]


def _lerp_leaf(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``lerp_`` of a float leaf towards ``end``, in ``start``'s dtype."""
    return numerics.lerp(start, end.astype(start.dtype), weight)


def _truncated(value: jax.Array, leaf: jax.Array) -> jax.Array:
    """A float32 result copied into an integer leaf, truncated towards zero as torch's
    in-place ``copy_`` truncates it."""
    return value.astype(leaf.dtype)


def swa_average(average: PyTree, params: PyTree, count: jax.Array | int) -> PyTree:
    """The uniform average of ``count`` models with one more, ``params``.

    .. math::
        \\bar W_{n+1} = \\bar W_n + \\frac{W - \\bar W_n}{n + 1}

    Float leaves: torch's ``get_swa_multi_avg_fn``, a ``lerp`` with weight :math:`1 / (n + 1)`
    (computed in the widest enabled float; torch's is a tensor of the default dtype, which costs
    float64 averages 1e-8 of relative accuracy under torch's default float32). Integer leaves
    (a step counter): torch's ``get_swa_avg_fn``, the formula above in float32, truncated back
    into the integer (torch's multi-tensor function raises for them), so that an average that
    is a whole number comes out as that number.

    Args:
      average: :math:`\\bar W_n`, the average so far (a pytree, or a list of arrays).
      params: :math:`W`, the model to add, structured like ``average``.
      count: :math:`n`, the number of models in ``average``.

    Returns:
      :math:`\\bar W_{n+1}`, structured and typed like ``average``.
    """
    models = jnp.asarray(count).astype(numerics.scalar_dtype()) + 1

    def leaf(a: jax.Array, p: jax.Array) -> jax.Array:
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return _lerp_leaf(a, p, 1 / models)
        return _truncated(swa_formula(a, p, count, jnp.float32), a)

    return jax.tree.map(leaf, average, params)


def ema_average(average: PyTree, params: PyTree, decay: Any, *, count: Any = None) -> PyTree:
    """One step of an exponential moving average.

    .. math::
        \\bar W_{t+1} = \\delta \\bar W_t + (1 - \\delta) W

    computed as torch's ``get_ema_multi_avg_fn``: for float leaves a ``lerp`` towards ``params``
    with weight :math:`1 - \\delta`; integer leaves (a step counter) as the formula above in
    float32, truncated back into the integer.

    Args:
      average: :math:`\\bar W_t`, the average so far (a pytree, or a list of arrays).
      params: :math:`W`, the current model, structured like ``average``.
      decay: :math:`\\delta \\in [0, 1]`, a number or a scalar array.
      count: the number of models averaged so far, where known at run time (an integer array
        under ``jit``): see :func:`ema_formula`.

    Returns:
      :math:`\\bar W_{t+1}`, structured and typed like ``average``.
    """

    def leaf(a: jax.Array, p: jax.Array) -> jax.Array:
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return _lerp_leaf(a, p, 1 - decay)
        return _truncated(ema_formula(a, p, decay, jnp.float32, count=count), a)

    return jax.tree.map(leaf, average, params)


def _opmath(dtype: Any) -> tuple[Any, Callable[[jax.Array], jax.Array]]:
    """The dtype torch's kernels compute ``dtype`` in (float32 for 16-bit floats), and the
    rounding of one operation's result to ``dtype``, kept in that dtype."""
    compute = jnp.float32 if numerics.is_half(dtype) else dtype
    return compute, lambda x: x.astype(dtype).astype(compute)


def ema_formula(
    average: jax.Array, current: jax.Array, decay: Any, dtype: Any, *, count: Any = None
) -> jax.Array:
    """:math:`\\delta \\bar W + (1 - \\delta) W` as torch writes it out (``decay * ema + (1 -
    decay) * current``, its ``get_ema_avg_fn``): two products and a sum, each rounded to
    ``dtype`` (no fused multiply-add), a 16-bit float computed in float32 with ``decay`` a
    float32 there, as torch's kernels compute it.

    Args:
      average: :math:`\\bar W`.
      current: :math:`W`.
      decay: :math:`\\delta`, a number or a scalar array.
      dtype: the dtype each operation rounds to.
      count: the number of models averaged so far, an integer array known only at run time
        (:func:`ema`'s and ``AveragedModel``'s); XLA on CPU fuses a product and a sum into
        one multiply-add, rounded once, unless something it cannot see through lies between
        them, such as adding ``min(count, 0)`` (zero) to the product's bits. Without it, the
        sum may differ from torch's in the last bit, and a truncated integer by one.

    Returns:
      The new average, in ``dtype``.
    """
    compute, rounded = _opmath(dtype)
    keep, take = (x if isinstance(x, (int, float)) else jnp.asarray(x, compute)
                  for x in (decay, 1 - decay))
    kept = rounded(average.astype(compute) * keep)
    taken = rounded(current.astype(compute) * take)
    if count is not None:
        kept, taken = (_apart(x, count) for x in (kept, taken))
    return (kept + taken).astype(dtype)


def _apart(value: jax.Array, count: Any) -> jax.Array:
    """``value`` unchanged, through integer arithmetic XLA cannot fold (``count >= 0`` is not
    known to it), so that the product that made it is not fused into the next sum."""
    bits = jnp.dtype(f"int{8 * jnp.dtype(value.dtype).itemsize}")
    zero = jnp.minimum(jnp.asarray(count), 0).astype(bits)
    moved = jax.lax.bitcast_convert_type(value, bits) + zero
    return jax.lax.bitcast_convert_type(moved, value.dtype)


def swa_formula(average: jax.Array, current: jax.Array, count: Any, dtype: Any) -> jax.Array:
    """:math:`\\bar W + (W - \\bar W) / (n + 1)` as torch writes it out (its
    ``get_swa_avg_fn``): a difference, a true division by :math:`n + 1` and a sum, each
    rounded to ``dtype``, a 16-bit float computed in float32.

    Args:
      average: :math:`\\bar W`, the average of ``count`` models.
      current: :math:`W`.
      count: :math:`n`, a number or an integer scalar array.
      dtype: the dtype each operation rounds to.

    Returns:
      The new average, in ``dtype``.
    """
    compute, rounded = _opmath(dtype)
    base = average.astype(compute)
    diff = rounded(current.astype(compute) - base)
    # XLA turns a division by a broadcast scalar into a product with its reciprocal, which
    # rounds differently: divide by a materialised array.
    models = jax.lax.optimization_barrier(
        jnp.broadcast_to(jnp.asarray(count).astype(compute) + 1, diff.shape))
    return (base + rounded(diff / models)).astype(dtype)


def check_decay(decay: float) -> None:
    """Raises torch's ``ValueError`` for an EMA decay outside [0, 1].

    Args:
      decay: the decay to check.

    Raises:
      ValueError: torch's message, if ``decay`` is outside [0, 1].
    """
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def weight_averaging(average_fn: AverageFn) -> WeightAveraging:
    """A :class:`WeightAveraging` from the function that folds a model into the average.

    The first update copies the params; the later ones call ``average_fn(average, params,
    count)`` with ``count >= 1`` models averaged so far. Both branches are computed and one
    selected per element, so that ``update`` is a single compiled call under ``jit``; a
    non-finite value the discarded branch may produce at ``count == 0`` does not leak.

    Args:
      average_fn: ``(average, params, count) -> new average``, jittable, e.g.
        :func:`swa_average`; ``count`` is an int32 scalar array.

    Returns:
      The :class:`WeightAveraging`.
    """

    def init(params: PyTree) -> AveragingState:
        # A copy, so that donating the state to a jitted update never deletes the params; the
        # count on the params' devices, so that the first update compiles what the later run.
        state = AveragingState(jax.device_put(params, may_alias=False), jnp.zeros([], jnp.int32))
        return place_state(state, params)

    def update(params: PyTree, state: AveragingState) -> AveragingState:
        averaged = average_fn(state.average, params, state.count)
        first = state.count == 0
        average = jax.tree.map(
            lambda a, p, new: jnp.where(first, p, new).astype(a.dtype), state.average, params,
            averaged,
        )
        return AveragingState(average, numerics.increment(state.count))

    return WeightAveraging(init, update)


def swa() -> WeightAveraging:
    """Stochastic weight averaging: the uniform average of all the models given to ``update``.

    After :math:`n` updates with :math:`W_1, \\dots, W_n`, the average is
    :math:`\\frac{1}{n} \\sum_i W_i` (:func:`swa_average`); torch's ``AveragedModel(model)``.

    Returns:
      The :class:`WeightAveraging`.

    References:
      Izmailov et al., `Averaging Weights Leads to Wider Optima and Better Generalization
      <https://arxiv.org/abs/1803.05407>`_, UAI 2018.
    """
    return weight_averaging(swa_average)


def ema_warmup(
    decay: float = 0.9999, gamma: float = 1.0, power: float = 2 / 3, min_decay: float = 0.0
) -> Callable[[jax.Array], jax.Array]:
    """An EMA decay that warms up from 0, for :func:`ema`: timm's and diffusers' schedule.

    .. math::
        \\delta_n = \\min(\\delta, \\max(\\delta_{min}, 1 - (1 + n / \\gamma)^{-p}))

    where :math:`n` is the number of models already averaged. A constant decay near 1 keeps the
    average close to the (random) first model for about :math:`1 / (1 - \\delta)` updates; the
    warm-up lets the early average follow the model, then approaches :math:`\\delta`
    (:math:`p = 2/3` reaches 0.999 after about 31k updates, :math:`p = 3/4` after about 10k).
    With timm's ``ModelEmaV3(use_warmup=True)`` defaults (``warmup_gamma=1``,
    ``warmup_power=2/3``) updated every step, the decays are timm's. optax's ``ema`` instead
    debiases an average started from zeros; this one starts from the first model, as torch's.

    Args:
      decay: :math:`\\delta`, the final decay, in [0, 1].
      gamma: :math:`\\gamma`, the warm-up's time scale, in updates.
      power: :math:`p`, the warm-up's exponent.
      min_decay: :math:`\\delta_{min}`, a floor for the decay.

    Returns:
      The function ``count -> decay`` (jittable), to pass as ``ema(decay=...)``.

    Raises:
      ValueError: for a ``decay`` outside [0, 1].
    """
    check_decay(decay)

    def schedule(count: jax.Array) -> jax.Array:
        n = jnp.asarray(count).astype(numerics.scalar_dtype())
        warm = 1 - (1 + n / gamma) ** -power
        return jnp.minimum(decay, jnp.maximum(min_decay, warm))

    return schedule


def ema(decay: float | Callable[[jax.Array], Any] = 0.999) -> WeightAveraging:
    """An exponential moving average of the params: torch's ``get_ema_multi_avg_fn(decay)``.

    .. math::
        \\bar W_1 = W_1, \\qquad \\bar W_{n+1} = \\delta_n \\bar W_n + (1 - \\delta_n) W_{n+1}

    Args:
      decay: :math:`\\delta`, in [0, 1]; or a jittable function of the number :math:`n` of
        models already averaged giving it, such as :func:`ema_warmup`'s.

    Returns:
      The :class:`WeightAveraging`.

    Raises:
      ValueError: torch's message, for a constant ``decay`` outside [0, 1].
    """
    if not callable(decay):
        check_decay(decay)

    def average_fn(average: PyTree, params: PyTree, count: jax.Array) -> PyTree:
        return ema_average(average, params, numerics.resolve(decay, count), count=count)

    return weight_averaging(average_fn)
