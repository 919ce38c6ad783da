"""The pure protocol: gradient transformations over pytrees.

A :class:`GradientTransformation` is a pair of pure functions, ``init(params) -> state`` and
``update(updates, state, params=None) -> (updates, state)``. Updates are *added* to parameters
(:func:`apply_updates`), exactly as in optax, so transforms of both libraries compose freely.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree
ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure optimiser building block: ``init(params)`` and ``update(updates, state, params)``.

    Attributes:
      init: builds the state (a pytree of arrays) for a parameter tree.
      update: maps gradients (or incoming updates) and the state to the updates to *add* to the
        parameters and the next state. ``params`` is required by transforms that read them
        (weight decay, for instance).
    """

    init: TransformInitFn
    update: TransformUpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
    """A :class:`GradientTransformation` whose ``update`` takes keyword arguments beyond params.

    ``update(updates, state, params=None, **extra_args)``: L-BFGS takes ``value=``, ``grad=``
    and ``value_fn=`` this way, ReduceLROnPlateau takes ``value=``. Inside :func:`chain` every
    member receives the extra arguments it accepts; a plain transform receives none.

    Attributes:
      init: ``init(params) -> state``, as :class:`GradientTransformation`'s.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
    """

    update: TransformUpdateExtraArgsFn


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


def accepts_extra_args(tx: Any) -> bool:
    """Whether ``tx.update`` takes ``**extra_args`` (ours and optax's ExtraArgs transforms do)."""
    if isinstance(tx, GradientTransformationExtraArgs):
        return True
    try:
        parameters = inspect.signature(tx.update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def with_extra_args_support(tx: Any) -> GradientTransformationExtraArgs:
    """Wraps ``tx`` (ours or optax's) so that its ``update`` accepts and ignores extra args.

    Args:
      tx: a gradient transformation, optim_jax's or optax's (anything with ``init`` and
        ``update``).

    Returns:
      ``tx`` itself (as a :class:`GradientTransformationExtraArgs`) if its ``update`` already
      takes ``**extra_args``, else a wrapper whose ``update`` drops them before calling it.
    """
    if accepts_extra_args(tx):
        return GradientTransformationExtraArgs(tx.init, tx.update)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update)


def identity() -> GradientTransformation:
    """The transform that returns its updates unchanged and keeps no state.

    Returns:
      A :class:`GradientTransformation` with :class:`EmptyState`: ``u -> u``.
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``params + updates`` leaf by leaf, keeping each parameter's dtype.

    .. math::
        \\theta_t = \\theta_{t-1} + u_t

    Updates are *added* (a descent transform has already negated and scaled them), as optax's
    ``apply_updates`` does.

    Args:
      params: the parameter pytree.
      updates: a pytree with ``params``' structure, from a transform's ``update``; a ``None``
        leaf (a frozen parameter) leaves its parameter unchanged.

    Returns:
      The new parameters, each leaf cast back to its parameter's dtype (a bfloat16 parameter
      stays bfloat16 when its update is float32).
    """
    return jax.tree.map(
        lambda p, u: p if u is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params,
        updates,
        is_leaf=lambda x: x is None,
    )
