"""Hyperparameters as state: change them between steps with no recompilation."""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import numerics
from optim_jax.base import GradientTransformationExtraArgs, OptState, with_extra_args_support
from optim_jax.sharding import place_state


class InjectHyperparamsState(NamedTuple):
    """The state of :func:`inject_hyperparams`: a step count, the hyperparameters, the inner state.

    Attributes:
      count: updates made (an int32 scalar); schedules are evaluated at it.
      hyperparams: ``{name: array}`` used by the last update; replace entries between steps
        with :func:`jax.numpy.full_like` of the stored value (same dtype, same devices) to
        change them without recompiling.
      inner_state: the wrapped transform's state.
    """

    count: jax.Array
    hyperparams: dict[str, Any]
    inner_state: OptState


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array)):
        return True
    return (
        isinstance(value, (tuple, list)) and len(value) > 0 and all(map(_is_numeric, value))
    )


def _as_array(value: Any, dtype: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_as_array(v, dtype) for v in value)
    return jnp.asarray(value, dtype)


def inject_hyperparams(
    factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wraps a transform factory so its numeric hyperparameters live in the state as arrays.

    ``inject_hyperparams(optim_jax.adam)(lr=1e-3, betas=(0.9, 0.999))`` behaves as
    ``optim_jax.adam(...)`` but keeps ``lr``, ``betas``, ``eps`` and ``weight_decay`` in
    ``state.hyperparams``; replace them there between steps with arrays like the stored ones,
    ``state.hyperparams['lr'] = jnp.full_like(state.hyperparams['lr'], 1e-4)``, and the same
    compiled step runs with the new values. jit compiles again for an argument of another dtype
    (a Python float, a weakly typed array) or placement: ``jnp.asarray(1e-4, jnp.float32)`` is
    not committed to a device, while the state of params placed on devices is, as is what a
    jitted step returns from it. A callable hyperparameter is a schedule evaluated at the step
    count. Booleans, strings and ``static_args`` stay Python constants.

    Args:
      factory: a function returning a transform, e.g. ``optim_jax.sgd``.
      static_args: names of numeric arguments that must stay Python values (sizes, counts).
      hyperparam_dtype: dtype of the stored hyperparameters; default the widest enabled float.

    Returns:
      A function with ``factory``'s signature returning a
      :class:`~optim_jax.GradientTransformationExtraArgs`. Values are validated once, when it is
      called, with the factory's own checks.
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def wrapped(*args, **kwargs) -> GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        schedules = {
            k: v for k, v in values.items() if callable(v) and k not in static_names
        }
        # The factory's own checks, on each schedule's first value.
        factory(**{**values, **{k: fn(0) for k, fn in schedules.items()}})
        numeric = {
            k: v for k, v in values.items() if _is_numeric(v) and k not in static_names
        }
        static = {k: v for k, v in values.items() if k not in schedules and k not in numeric}
        dtype = hyperparam_dtype or numerics.scalar_dtype()

        def build(hyperparams):
            return with_extra_args_support(factory(**static, **hyperparams))

        def current(hyperparams, count):
            return {**hyperparams, **{k: fn(count) for k, fn in schedules.items()}}

        def init(params):
            count = jnp.zeros([], jnp.int32)
            hyperparams = current(
                {k: _as_array(v, dtype) for k, v in numeric.items()}, count
            )
            state = InjectHyperparamsState(count, hyperparams, build(hyperparams).init(params))
            return place_state(state, params)

        def update(updates, state, params=None, **extra_args):
            hyperparams = current(state.hyperparams, state.count)
            updates, inner_state = build(hyperparams).update(
                updates, state.inner_state, params, **extra_args
            )
            return updates, InjectHyperparamsState(
                numerics.increment(state.count), hyperparams, inner_state
            )

        return GradientTransformationExtraArgs(init, update)

    return wrapped
