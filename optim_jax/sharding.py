"""Placing optimizer state on the params' devices, and ZeRO-1 state sharding.

State leaves shaped like a parameter take that parameter's sharding when they are created
(:func:`optim_jax.numerics.zeros_like`). Everything else a state holds (``step`` counters,
injected hyperparameters, L-BFGS's ``ro``) is placed by :func:`place_state`, replicated over
the mesh the params live on (or on their one device), so one jitted update sees all of its
inputs on the same devices and returns them with the shardings they came in with.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    PyTree,
    with_extra_args_support,
)


def params_mesh(params: PyTree) -> Mesh | None:
    """The mesh of the first parameter laid out with a ``NamedSharding`` (``None`` if none is).

    Traced params (inside ``jit``) carry no placement, so this is ``None`` there too.
    """
    sharding = _first_placement(params)
    return sharding.mesh if isinstance(sharding, NamedSharding) else None


def _first_placement(params: PyTree) -> jax.sharding.Sharding | None:
    """The sharding of the first parameter committed to its devices, if any."""
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and \
                leaf.committed:
            return leaf.sharding
    return None


def place_state(state: PyTree, params: PyTree) -> PyTree:
    """``state`` with its fresh leaves put on the params' devices.

    Leaves already committed to devices (those made like a parameter, which take its sharding)
    are left where they are; the others (``step`` counters, injected hyperparameters) are
    replicated over the params' mesh, or put on the params' device.

    Args:
      state: a freshly initialised optimizer state.
      params: the parameters it belongs to.

    Returns:
      ``state`` unchanged when no parameter is committed to a device (arrays placed by default,
      or traced); otherwise with its uncommitted leaves placed as the params are.
    """
    placement = _first_placement(params)
    if placement is None:
        return state
    if isinstance(placement, NamedSharding):
        placement = NamedSharding(placement.mesh, P())

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and \
                not leaf.committed:
            return jax.device_put(leaf, placement)
        return leaf

    return jax.tree.map(place, state)


def zero_redundancy(
    tx: GradientTransformation, mesh: Mesh, axis: str = "data"
) -> GradientTransformationExtraArgs:
    """ZeRO-1: ``tx`` with its state sharded along a data-parallel mesh axis.

    In data-parallel training every device holds the whole (replicated) parameter tree, and by
    default the whole optimizer state too. Here each state leaf is split along ``axis`` instead,
    on its first dimension divisible by the axis size (leaves with none, such as ``step``, stay
    replicated), so the state costs ``1/N`` of the memory per device for ``N`` devices on the
    axis. The update is computed where the state lives, on each device's slice of the gradient,
    and the updates are all-gathered back to the replicated layout of the params: the one
    collective ZeRO-1 adds (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations Toward
    Training Trillion Parameter Models", arXiv:1910.02054).

    Args:
      tx: the optimizer to wrap, e.g. ``adam(1e-3)``.
      mesh: the device mesh the params are replicated over.
      axis: the mesh axis to shard the state along.

    Returns:
      A transform with ``tx``'s updates and state values, its state laid out over ``axis``.
      Params must be replicated (plain data parallelism; ``init`` checks): with sharded params
      (FSDP, tensor parallelism) the state follows them and needs no wrapper.
    """
    if axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh, whose axes are "
                         f"{tuple(mesh.shape)}")
    if any(kind != jax.sharding.AxisType.Auto for kind in mesh.axis_types):
        raise ValueError(
            f"zero_redundancy needs a mesh with Auto axes, got axis_types={mesh.axis_types}: "
            "build it with jax.make_mesh(..., axis_types=(jax.sharding.AxisType.Auto,) * n) "
            "or jax.sharding.Mesh(devices, names)"
        )
    size = mesh.shape[axis]
    replicated = NamedSharding(mesh, P())

    def layout(leaf: Any) -> NamedSharding:
        for dim, length in enumerate(jax.numpy.shape(leaf)):
            if length % size == 0:
                return NamedSharding(mesh, P(*([None] * dim), axis))
        return replicated

    def shard(state: PyTree) -> PyTree:
        def put(leaf: Any) -> Any:
            if isinstance(leaf, jax.core.Tracer):
                return jax.lax.with_sharding_constraint(leaf, layout(leaf))
            return jax.device_put(leaf, layout(leaf))

        return jax.tree.map(put, state)

    tx = with_extra_args_support(tx)

    def init(params: PyTree) -> PyTree:
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            sharding = getattr(leaf, "sharding", None)
            if sharding is not None and not sharding.is_fully_replicated:
                raise ValueError(
                    f"param {jax.tree_util.keystr(path)} is sharded ({sharding}): ZeRO-1 is "
                    "for replicated params (plain data parallelism); with params sharded "
                    "(FSDP, tensor parallelism) the state already follows them"
                )
        return shard(tx.init(params))

    def update(updates, state, params=None, **extra_args):
        updates, state = tx.update(updates, state, params, **extra_args)
        updates = jax.tree.map(
            lambda u: jax.lax.with_sharding_constraint(u, replicated), updates
        )
        return updates, shard(state)

    return GradientTransformationExtraArgs(init, update)
