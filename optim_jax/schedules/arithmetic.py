"""What every schedule is built from: the ``Step`` and ``Schedule`` types and two arithmetics.

A schedule's formula is written once, over the operations of :class:`Ops`, and
:func:`from_formula` runs it with :data:`HOST` for a Python step (Python floats, in torch's
float64 arithmetic and order, so that the stateful classes reproduce torch's sequences bit for
bit) or with :data:`ARRAY` for an array step (``jax.numpy``: jittable, vmappable).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import numerics

Step = int | jax.Array
"""A step count: a Python int (host arithmetic, a float result) or an integer array."""

Schedule = Callable[[Step], Any]
"""A function ``step -> lr``: a float for a Python step, an array for an array step."""


def _host_fori_loop(lower: int, upper: int, body: Callable, init: Any) -> Any:
    for i in range(lower, upper):
        init = body(i, init)
    return init


def _array_fori_loop(lower: Any, upper: Any, body: Callable, init: Any) -> Any:
    return jax.lax.fori_loop(lower, upper, body, jnp.asarray(init, numerics.scalar_dtype()))


class Ops(NamedTuple):
    """The operations whose host (Python float, as torch computes) and array forms differ."""

    cos: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    # cond(pred, if_true, if_false) calls only the chosen thunk on the host, where the other
    # branch may divide by zero; on arrays both run and one is selected.
    cond: Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
    fori_loop: Callable[[Any, Any, Callable, Any], Any]


HOST = Ops(
    cos=math.cos,
    floor=math.floor,
    minimum=min,
    maximum=max,
    where=lambda pred, a, b: a if pred else b,
    cond=lambda pred, a, b: a() if pred else b(),
    fori_loop=_host_fori_loop,
)
"""The host arithmetic: Python floats, computed as torch computes them."""

ARRAY = Ops(
    cos=jnp.cos,
    floor=jnp.floor,
    minimum=jnp.minimum,
    maximum=jnp.maximum,
    where=jnp.where,
    cond=lambda pred, a, b: jnp.where(pred, a(), b()),
    fori_loop=_array_fori_loop,
)
"""The array arithmetic: ``jax.numpy``, traceable under ``jit`` and ``vmap``."""


def from_formula(formula: Callable[[Any, Ops], Any]) -> Schedule:
    """The schedule computing ``formula(step, ops)``: on the host for a number, else with jnp."""

    def schedule(step: Step) -> Any:
        if isinstance(step, numbers.Real):
            return formula(step, HOST)
        step = jnp.asarray(step)
        if jnp.issubdtype(step.dtype, jnp.integer):
            # The widest enabled int: jnp divides int32 arrays in float32 even with x64 on.
            step = step.astype(jnp.result_type(int))
        return jnp.asarray(formula(step, ARRAY)).astype(numerics.scalar_dtype())

    return schedule


class Chaining(NamedTuple):
    """How a schedule acts on the rate inside torch's ``ChainedScheduler``.

    Attributes:
      kind: ``"factor"``, multiplying the rate by its own step's factor (``StepLR``,
        ``ExponentialLR``, ...); ``"outright"``, setting the rate from the base rate whatever
        it was (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``, ``CosineAnnealingWarmRestarts``);
        ``"restarts"``, ``CosineAnnealingLR``: factors, except the step after each minimum
        (``t = T_max + 1`` modulo ``2 * T_max``), where torch adds to the rate instead.
      period: ``T_max``, for ``"restarts"``.
      eta_min: ``eta_min``, for ``"restarts"``.
    """

    kind: str
    period: int = 0
    eta_min: float = 0.0


FACTOR = Chaining("factor")
OUTRIGHT = Chaining("outright")


def with_chaining(schedule: Schedule, chaining: Chaining) -> Schedule:
    """``schedule``, marked with how it acts inside a chain (read by ``chaining_of``)."""
    schedule.chaining = chaining
    return schedule


def chaining_of(schedule: Schedule) -> Chaining:
    """How ``schedule`` acts inside a chain; a schedule not marked multiplies (``FACTOR``)."""
    return getattr(schedule, "chaining", FACTOR)

