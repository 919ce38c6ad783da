"""Placing optimizer state on the params' devices, and ZeRO-1 state sharding.

State leaves shaped like a parameter take that parameter's sharding when they are created
(:func:`optim_jax.numerics.zeros_like`). Everything else a state holds (``step`` counters,
injected hyperparameters, L-BFGS's flattened history) is placed by :func:`place_state`,
replicated over the mesh the params live on, so one jitted update sees all of its inputs on the
same devices and returns them with the shardings they came in with.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from optim_jax.base import PyTree


def params_mesh(params: PyTree) -> Mesh | None:
    """The mesh of the first parameter laid out with a ``NamedSharding`` (``None`` if none is).

    Traced params (inside ``jit``) carry no placement, so this is ``None`` there too.
    """
    for leaf in jax.tree.leaves(params):
        sharding = None if isinstance(leaf, jax.core.Tracer) else getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def place_state(state: PyTree, params: PyTree) -> PyTree:
    """``state`` with every leaf not already on the params' mesh replicated over it.

    Args:
      state: a freshly initialised optimizer state.
      params: the parameters it belongs to.

    Returns:
      ``state`` unchanged when the params are not laid out over a mesh (one device, or traced);
      otherwise with scalars and other leaves not sharded over that mesh replicated over it.
    """
    mesh = params_mesh(params)
    if mesh is None:
        return state
    replicated = NamedSharding(mesh, P())

    def place(leaf: Any) -> Any:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array):
            return leaf
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return leaf
        return jax.device_put(leaf, replicated)

    return jax.tree.map(place, state)
