"""Small composable building blocks; the algorithms are chains of these.

Each block follows torch.optim's single-tensor arithmetic, operation for operation, so that a
chain reproduces torch's parameter trajectory to rounding. Numeric hyperparameters may be Python
numbers, arrays (traced, as :func:`optim_jax.inject_hyperparams` passes them) or, where noted,
schedules ``step -> value``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import numerics, validation
from optim_jax.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.combine import chain
from optim_jax.sharding import place_state


def stateless(fn) -> GradientTransformation:
    """A transform from ``fn(updates, params) -> updates`` that keeps no state."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        return fn(updates, params), state

    return GradientTransformation(init, update)


def norm(x: jax.Array, axis: Any = None, keepdims: bool = False) -> jax.Array:
    """torch's ``Tensor.norm()``: the 2-norm accumulated in at least float32, returned in
    ``x``'s dtype (a bfloat16 tensor's norm is rounded to bfloat16, as torch's is)."""
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.sqrt(jnp.sum(wide * wide, axis=axis, keepdims=keepdims)).astype(x.dtype)


def negate() -> GradientTransformation:
    """``u -> -u``: how ``maximize=True`` turns ascent into descent, before anything else.

    Returns:
      A stateless :class:`~optim_jax.GradientTransformation`.
    """
    return stateless(lambda updates, params: jax.tree.map(jnp.negative, updates))


def require_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(f"{name} needs the current params: call update(updates, state, params)")


def add_decayed_weights(weight_decay: float | jax.Array) -> GradientTransformation:
    """``u -> u + weight_decay * p``.

    Placed before the moment estimates it is torch's L2 penalty (``grad.add(param,
    alpha=weight_decay)``); placed after them and before the learning rate it is AdamW's
    decoupled decay ``p <- p * (1 - lr * weight_decay)``.

    Args:
      weight_decay: :math:`\\lambda`, a float or an array (traced under ``inject_hyperparams``).

    Returns:
      A stateless :class:`~optim_jax.GradientTransformation`; its ``update`` needs ``params``.
    """

    def fn(updates, params):
        require_params(params, "add_decayed_weights")
        return jax.tree.map(lambda u, p: u + numerics.like(weight_decay, p) * p, updates, params)

    return stateless(fn)


def clip_grad_norm(max_norm: float, norm_type: float = 2.0) -> GradientTransformation:
    """Rescales the whole update tree when its global norm exceeds ``max_norm``.

    torch's ``torch.nn.utils.clip_grad_norm_`` as a transform, with its arithmetic:

    .. math::
        n = \\big\\lVert (\\lVert g_1 \\rVert_p, \\dots, \\lVert g_k \\rVert_p) \\big\\rVert_p,
        \\qquad g_i \\leftarrow g_i \\cdot \\min\\Big(\\frac{\\text{max\\_norm}}{n + 10^{-6}},\\ 1\\Big)

    (optax's ``clip_by_global_norm`` has no ``1e-6`` and leaves updates untouched below the
    threshold; torch multiplies by the clamped factor, 1 included.) Put it first in a
    :func:`chain`, before the optimiser: ``chain(clip_grad_norm(1.0), adam(1e-3))``. On sharded
    params the norm is the one cross-device reduction this adds (an all-reduce of a scalar).

    Args:
      max_norm: the largest global norm let through.
      norm_type: :math:`p` of the p-norm; ``float('inf')`` for the largest absolute value.

    Returns:
      A stateless :class:`~optim_jax.GradientTransformation`.
    """
    validation.require(lambda v: v >= 0.0, max_norm, f"Invalid max_norm: {max_norm}")
    validation.require(lambda v: v > 0.0, norm_type, f"Invalid norm_type: {norm_type}")

    def norm(x: jax.Array) -> jax.Array:
        return jnp.linalg.vector_norm(x, ord=norm_type)

    def fn(updates, params):
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates
        total = norm(jnp.stack([norm(leaf) for leaf in leaves]))
        scale = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)

    return stateless(fn)


def scheduled(build: Callable[[Any], GradientTransformation], lr: ScalarOrSchedule
              ) -> GradientTransformation:
    """``build(lr)``, a stateless block of the learning rate, with ``lr`` possibly a schedule.

    A schedule is evaluated at the number of updates done before this one (0 at the first
    step), as torch's lr schedulers set ``lr`` before the first ``optimizer.step()``.

    Args:
      build: ``lr -> block``, the block stateless (its state ``EmptyState()``).
      lr: a float, an array, or a schedule ``step -> lr``.

    Returns:
      ``build(lr)`` for a constant; for a schedule a block with a :class:`ScheduleState`.
    """
    if not callable(lr):
        return build(lr)

    def init(params):
        del params
        return ScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        updates, _ = build(lr(state.count)).update(updates, EmptyState(), params)
        return updates, ScheduleState(count=numerics.increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(lr: ScalarOrSchedule) -> GradientTransformation:
    """``u -> -lr * u``, the descent step. ``lr`` may be a schedule ``step -> lr``.

    Args:
      lr: :math:`\\gamma`, a float, an array, or a schedule ``step -> lr`` (see
        :func:`scheduled`).

    Returns:
      A :class:`~optim_jax.GradientTransformation`: stateless for a constant, with a
      :class:`ScheduleState` for a schedule.
    """
    return scheduled(lambda lr: stateless(
        lambda updates, params: jax.tree.map(lambda u: u * numerics.like(-lr, u), updates)
    ), lr)


def decay_weights(lr: ScalarOrSchedule, weight_decay: Any) -> GradientTransformation:
    """torch's decoupled weight decay ``p *= 1 - lr * weight_decay``, as an added update.

    ``u -> u + (c - 1) p`` with :math:`c = 1 - \\gamma\\lambda` formed as torch forms it: in
    float64 on the host for a Python ``lr``, in ``lr``'s dtype for an array (torch's tensor
    lr, :func:`optim_jax.numerics.lr_operand`), then rounded to each param's dtype. Goes after
    the step (AdamW's ``theta <- theta * c - step``).

    Args:
      lr: :math:`\\gamma`, a float, an array or a schedule ``step -> lr``.
      weight_decay: :math:`\\lambda`.

    Returns:
      A block whose ``update`` needs ``params``: stateless for a constant ``lr``, with a
      :class:`ScheduleState` for a schedule.
    """

    def build(lr):
        factor = numerics.decay_factor(lr, weight_decay)

        def fn(updates, params):
            require_params(params, "decay_weights")
            return jax.tree.map(lambda u, p: numerics.decayed(u, p, factor), updates, params)

        return stateless(fn)

    return scheduled(build, lr)


class ScheduleState(NamedTuple):
    """The state of a scheduled transform: how many updates it has made.

    Attributes:
      count: updates made (an int32 scalar); the schedule is evaluated at it.
    """

    count: jax.Array


class MomentumState(NamedTuple):
    """torch's SGD momentum state: the momentum buffer and its step count.

    Attributes:
      step: updates made; 0 means the buffer is unset (torch's ``None``) and starts from the
        next gradient.
      momentum_buffer: :math:`b_t`, shaped like the params.
    """

    step: jax.Array
    momentum_buffer: Any


def trace_momentum(
    momentum: float | jax.Array, dampening: float | jax.Array = 0.0, nesterov: bool = False
) -> GradientTransformation:
    """torch's SGD momentum buffer, with dampening and Nesterov.

    .. math::
        b_1 = g_1, \\qquad b_t = \\mu b_{t-1} + (1 - \\tau) g_t, \\qquad
        u_t = g_t + \\mu b_t \\ (\\text{nesterov}) \\ \\text{or} \\ b_t.

    The first buffer is the gradient itself (torch's rule), not ``(1 - dampening) * g``. A
    momentum given as an array (``inject_hyperparams``) may be 0 at a step: the gradient then
    passes through and the buffer and its count stay as they were, as torch's SGD leaves its
    buffer alone while momentum is 0 (and starts it from the gradient if it has none).

    Args:
      momentum: :math:`\\mu`, the momentum factor.
      dampening: :math:`\\tau`; the first buffer is undampened.
      nesterov: emit :math:`g_t + \\mu b_t` instead of :math:`b_t`.

    Returns:
      The block; its state is a :class:`MomentumState`.
    """

    def init(params):
        return MomentumState(
            step=jnp.zeros([], jnp.int32),
            momentum_buffer=jax.tree.map(numerics.zeros_like, params),
        )

    def update(updates, state, params=None):
        del params
        decay, keep = momentum_terms(state.step, momentum, dampening)
        off = None if isinstance(momentum, (int, float)) else jnp.asarray(momentum) == 0
        if off is not None:  # an array momentum, 0 at this step: the buffer stays, exactly
            decay, keep = jnp.where(off, 1, decay), jnp.where(off, 0, keep)

        def buffer(g, b):
            return b * numerics.like(decay, g) + numerics.like(keep, g) * g

        buffers = jax.tree.map(buffer, updates, state.momentum_buffer)
        if nesterov:
            directions = jax.tree.map(
                lambda g, b: g + numerics.like(momentum, g) * b, updates, buffers
            )
        else:
            directions = buffers
        step = numerics.increment(state.step)
        if off is not None:  # the gradient passes through, and the count stays
            directions = jax.tree.map(lambda g, d: jnp.where(off, g, d), updates, directions)
            step = jnp.where(off, state.step, step)
        return directions, MomentumState(step, buffers)

    return GradientTransformation(init, update)


def momentum_terms(step: jax.Array, momentum: Any, dampening: Any) -> tuple[Any, Any]:
    """``(decay, keep)`` of torch's momentum buffer ``b <- decay * b + keep * g`` at ``step``
    (buffer updates made before this one).

    The first buffer is the gradient: ``0 * b + 1 * g == g`` exactly, since ``b`` starts at
    zero. Choosing the scalars (not the elements) keeps one multiply-add per element.
    """
    first = step == 0
    return jnp.where(first, 0, momentum), jnp.where(first, 1, 1 - dampening)


def descent(
    core: GradientTransformation,
    lr: ScalarOrSchedule | None,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    lr_in_core: bool = False,
) -> GradientTransformationExtraArgs:
    """torch.optim's frame around an algorithm's direction ``core``.

    .. math::
        g \\leftarrow \\pm g \\,[+ \\lambda \\theta], \\quad
        u = -\\gamma \\operatorname{core}(g) \\,[- \\gamma \\lambda \\theta]

    The decay term goes before ``core`` (L2 penalty on the gradient) or, with
    ``decoupled_weight_decay``, after the step (``theta *= 1 - lr * weight_decay``,
    :func:`decay_weights`); a Python zero ``weight_decay`` leaves it out, so the parameters are
    not read for it.

    Args:
      core: the algorithm's block, mapping the (signed, decayed) gradient to a direction (or,
        with ``lr_in_core``, to the step itself).
      lr: learning rate :math:`\\gamma`, a float, an array or a schedule ``step -> lr``;
        ``None`` when ``core`` applies its own step size and there is no decoupled decay.
      weight_decay: :math:`\\lambda`.
      maximize: negate the gradient first, to maximise the objective.
      decoupled_weight_decay: decay the weights directly instead of through the gradient.
      lr_in_core: ``core`` was built with ``lr`` and applies it (where torch forms a step size
        from it, such as ``lr / (1 - beta1**t)``); ``lr`` then only serves the decoupled decay.

    Returns:
      ``chain(negate?, L2 decay?, core, scale_by_learning_rate(lr)?, decay_weights?)``.
    """
    decay = not numerics.is_static_zero(weight_decay)
    return placed(chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if decay and not decoupled_weight_decay else []),
        core,
        *([] if lr is None or lr_in_core else [scale_by_learning_rate(lr)]),
        *([decay_weights(lr, weight_decay)] if decay and decoupled_weight_decay else []),
    ))


def placed(tx: GradientTransformationExtraArgs) -> GradientTransformationExtraArgs:
    """``tx`` whose ``init`` puts the state on the params' devices (:func:`place_state`), and
    whose ``update`` refuses gradients shaped unlike the params (:func:`check_like_params`)."""

    def update(updates, state, params=None, **extra):
        check_like_params(updates, params)
        return tx.update(updates, state, params, **extra)

    return tx._replace(init=lambda params: place_state(tx.init(params), params), update=update)


def check_like_params(updates: Any, params: Any) -> None:
    """Raises ``ValueError`` where ``updates`` differ from ``params`` (when given) in structure
    or in a leaf's shape, naming the leaf: a gradient that would broadcast against its param
    is refused, as torch refuses a gradient of another size."""
    difference = None if params is None else validation.tree_difference(updates, params)
    if difference:
        raise ValueError(f"update: {difference}")
