"""Contiguous buffers for params sharded over a device mesh: one per dtype and set of mesh axes.

:class:`~optim_jax.packing.Packing` lays a tree's leaves end to end on one device. Laid end to
end globally, sharded leaves would put parts of every device's shards on every other device,
and each step would move them. Here each device's part of a buffer is instead its own shards of
the leaves, laid end to end: leaves of one dtype whose ``PartitionSpec`` shard over the same
mesh axes share a buffer, sharded over those axes (replicated where there are none), so every
device holds the same bytes as before and an elementwise step over the buffers needs no
collective. Packing and unpacking run per device (``jax.shard_map``): local copies, no
communication.

Leaves of a shape their spec's axes do not divide evenly, or sharded over different meshes (or
not by a ``NamedSharding``), keep the tree: :meth:`ShardedPacking.of` returns ``None``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from optim_jax.base import PyTree
from optim_jax.packing import LARGE, Packing, Slot


def _axes(spec: PartitionSpec) -> tuple[str, ...]:
    """The mesh axes a spec shards over, in the order its dimensions name them."""
    axes: list[str] = []
    for entry in spec:
        if entry is not None:
            axes.extend(entry if isinstance(entry, tuple) else (entry,))
    return tuple(axes)


def _local_shape(shape: tuple, spec: PartitionSpec, mesh: Any) -> tuple | None:
    """Each device's shard shape of an array of ``shape`` laid out by ``spec``, or ``None``
    where the spec's axes do not divide the shape evenly."""
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    local = []
    for size, entry in zip(shape, entries):
        parts = int(np.prod([mesh.shape[a] for a in _axes(PartitionSpec(entry))], dtype=np.int64))
        if size % parts:
            return None
        local.append(size // parts)
    return tuple(local)


class ShardedPacking(Packing):
    """How a tree's sharded leaves lie in contiguous buffers, one per dtype and set of axes.

    Each :class:`~optim_jax.packing.Slot` gives a leaf's offset and size within one device's
    part of its buffer (its shard's), and the leaf's global shape. A buffer is 1-D, of
    ``parts * local length`` elements, sharded over its leaves' mesh axes.

    Args:
      treedef, slots, sizes: as :class:`~optim_jax.packing.Packing` takes them (local sizes).
      mesh: the mesh every leaf is sharded over.
      specs: each leaf's ``PartitionSpec``, in leaf order.
    """

    one_device = False

    def __init__(self, treedef: Any, slots: tuple[Slot, ...], sizes: tuple[tuple[str, int], ...],
                 mesh: Any, specs: tuple[PartitionSpec, ...]):
        self.mesh, self.specs = mesh, specs
        self.local_shapes = tuple(_local_shape(slot.shape, spec, mesh)
                                  for slot, spec in zip(slots, specs))
        self.buffer_specs = {slot.bucket: PartitionSpec(_axes(spec)) if _axes(spec)
                             else PartitionSpec() for slot, spec in zip(slots, specs)}
        super().__init__(treedef, slots, sizes)

    @classmethod
    def of(cls, tree: PyTree) -> "ShardedPacking | None":
        """The packing of ``tree``'s arrays, or ``None`` where they cannot share buffers
        shard by shard (see the module's docstring).

        Args:
          tree: a pytree of arrays, each with a ``NamedSharding`` over one mesh.
        """
        leaves, treedef = jax.tree.flatten(tree)
        shardings = [getattr(leaf, "sharding", None) for leaf in leaves]
        if not leaves or not all(isinstance(s, NamedSharding) for s in shardings):
            return None
        mesh = shardings[0].mesh
        if any(s.mesh != mesh for s in shardings):
            return None
        sizes: dict[str, int] = {}
        slots, specs = [], []
        for index, (leaf, sharding) in enumerate(zip(leaves, shardings)):
            local = _local_shape(tuple(leaf.shape), sharding.spec, mesh)
            if local is None:
                return None
            dtype, size = jnp.dtype(leaf.dtype).name, int(np.prod(local, dtype=np.int64))
            # Leaves whose specs shard over the same axes lay their shards out alike.
            key = f"{dtype}@{'/'.join(_axes(sharding.spec))}"
            key = f"{key}#{index}" if size > LARGE else key
            slots.append(Slot(key, sizes.get(key, 0), size, tuple(leaf.shape), dtype))
            specs.append(sharding.spec)
            sizes[key] = sizes.get(key, 0) + size
        return cls(treedef, tuple(slots), tuple(sizes.items()), mesh, tuple(specs))

    def _key(self) -> tuple:
        return super()._key() + (self.mesh, self.specs)

    def __repr__(self) -> str:
        return f"ShardedPacking({len(self.slots)} leaves in {dict(self.sizes)} per device)"

    def pack(self, tree: PyTree) -> dict[str, jax.Array]:
        """``tree``'s leaves, each device's shards laid end to end (traced or not).

        Args:
          tree: a tree with this packing's structure and shapes.

        Returns:
          ``{bucket: 1-D buffer}``, each sharded by its spec in ``buffer_specs``.
        """
        lay_out = super().pack  # each device's shards, laid out as one device's leaves

        def local(*leaves):
            return lay_out(self.treedef.unflatten(leaves))

        return jax.shard_map(local, mesh=self.mesh, in_specs=self.specs,
                             out_specs=self.buffer_specs, check_vma=False)(
                                 *self.treedef.flatten_up_to(tree))

    def packed_and_parts(self, tree: PyTree) -> tuple[dict[str, jax.Array], None]:
        """``(pack(tree), None)``: no step reads sharded leaves unconcatenated.

        No CPU kernel steps sharded buffers (they are not on one device).

        Args:
          tree: a tree with this packing's structure and shapes.

        Returns:
          ``(pack(tree), None)``.
        """
        return self.pack(tree), None

    def unpack(self, buffers: dict[str, jax.Array], offsets: Any = None) -> PyTree:
        """The tree laid out in ``buffers``, each leaf with its own sharding (traced or not).

        Args:
          buffers: as :meth:`pack` returns them.
          offsets: unused (each device's slices are at constant offsets).

        Returns:
          The tree.
        """
        del offsets

        def local(buffers):
            return [jax.lax.slice(buffers[s.bucket], (s.offset,), (s.offset + s.size,))
                    .reshape(shape) for s, shape in zip(self.slots, self.local_shapes)]

        leaves = jax.shard_map(local, mesh=self.mesh, in_specs=(self.buffer_specs,),
                               out_specs=list(self.specs), check_vma=False)(buffers)
        return self.treedef.unflatten(leaves)

    def offsets(self) -> list:
        """None are taken: see :meth:`unpack`."""
        return []
