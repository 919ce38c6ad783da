"""``ZeroRedundancyOptimizer``: the stateful face of ZeRO-1 (:func:`optim_jax.zero_redundancy`)."""

from __future__ import annotations

import functools
from typing import Any

from jax.sharding import Mesh

from optim_jax.stateful.lbfgs import LBFGS
from optim_jax.sharding import params_mesh, zero_redundancy


def ZeroRedundancyOptimizer(  # noqa: N802  (torch's class name; returns the wrapped class)
    params: Any, optimizer_class: type, *, axis: str = "data", mesh: Mesh | None = None,
    **defaults: Any,
) -> Any:
    """The stateful face of :func:`zero_redundancy`, named after torch's distributed class.

    ``ZeroRedundancyOptimizer(params, optim_jax.Adam, lr=1e-3)`` is an ``optim_jax.Adam``
    (``isinstance`` holds, every method works as usual) whose state is sharded along ``axis``
    of the params' mesh while the params stay replicated.

    Args:
      params: as the optimizer class takes them, laid out (replicated) over a mesh.
      optimizer_class: a stateful optimizer such as ``optim_jax.Adam``.
      axis: the data-parallel mesh axis to shard the state along.
      mesh: the mesh; by default the one the params are laid out over.
      **defaults: the optimizer's hyperparameters.

    Returns:
      An instance of ``optimizer_class``.
    """
    if issubclass(optimizer_class, LBFGS):
        raise TypeError("ZeroRedundancyOptimizer does not take LBFGS: its state is a few "
                        "vectors per parameter, already laid out like the params")
    mesh = params_mesh(params) if mesh is None else mesh
    if mesh is None:
        raise ValueError("ZeroRedundancyOptimizer needs params laid out over a mesh (a "
                         "NamedSharding) or mesh=...")
    layout = functools.partial(zero_redundancy, mesh=mesh, axis=axis)
    return optimizer_class(params, state_layout=layout, **defaults)
