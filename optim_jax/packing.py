"""Contiguous buffers: a tree's small leaves laid end to end, one 1-D buffer per dtype.

A step over many small arrays pays per array crossing the jit boundary (a few microseconds
each, in and out, for params, gradients and every state field), and XLA traces and compiles the
update once per leaf. Over contiguous buffers an elementwise update is the same arithmetic on
a handful of arrays: the stateful optimizers keep their groups so (:mod:`optim_jax.stateful`),
and :func:`contiguous` offers the layout to pure users.

By default only leaves of at most :data:`LARGE` elements share buffers. A large leaf is a buffer
of its own (flattening it costs nothing): concatenating large gradients every step would cost a
pass over their memory and a fresh temporary, more than the few microseconds their crossing
saves (measured on XLA CPU: 200 leaves x 50k in one buffer, 2.9x slower than leaf by leaf). A
step that reads the gradients unconcatenated (the CPU kernels, :mod:`optim_jax.fused`) has no
such pass to pay, and its groups share larger leaves too (``shared_up_to``).

A :class:`Packing` says where each leaf lies: buffer, offset, size and shape. It is hashable, so
it can key compiled programs; ``pack`` and ``unpack`` work traced or not.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    PyTree,
    with_extra_args_support,
)
from optim_jax.state_fields import collect_fields, replace_fields
from optim_jax.validation import tree_difference


LARGE = 16384


class Slot(NamedTuple):
    """Where one leaf lies: its buffer's key (the dtype's name for the shared buffer, with the
    leaf's index for a large leaf's own), offset, size, shape and dtype's name."""

    bucket: str
    offset: int
    size: int
    shape: tuple[int, ...]
    dtype: str


class Packing:
    """How a tree's leaves lie in contiguous buffers, in first-seen order.

    The small leaves share one buffer per dtype; each large one is a buffer of its own.

    Made by :meth:`of`; two packings of trees with the same structure, shapes and dtypes are
    equal and hash alike.

    Args:
      treedef: the tree's structure.
      slots: one :class:`Slot` per leaf, in leaf order.
      sizes: each buffer's key and length, in buffer order.
    """

    one_device = True  # its buffers sit where its leaves did, on one device

    def __init__(self, treedef: Any, slots: tuple[Slot, ...], sizes: tuple[tuple[str, int], ...]):
        self.treedef, self.slots, self.sizes = treedef, slots, sizes
        self.flat_treedef = jax.tree.structure({key: 0 for key, _ in sizes})
        self._hash = hash(self._key())  # a packing keys every step's program lookup

    @classmethod
    def of(cls, tree: PyTree, shared_up_to: int = LARGE) -> "Packing":
        """The packing of ``tree``.

        Args:
          tree: a pytree of arrays (or of anything with ``shape`` and ``dtype``: tracers,
            ``jax.ShapeDtypeStruct``).
          shared_up_to: leaves of up to this many elements share their dtype's buffer; larger
            ones are buffers of their own.

        Returns:
          Its :class:`Packing`.
        """
        leaves, treedef = jax.tree.flatten(tree)
        sizes: dict[str, int] = {}
        slots = []
        for index, leaf in enumerate(leaves):
            dtype, size = jnp.dtype(leaf.dtype).name, int(np.prod(leaf.shape, dtype=np.int64))
            key = f"{dtype}#{index}" if size > shared_up_to else dtype
            slots.append(Slot(key, sizes.get(key, 0), size, tuple(leaf.shape), dtype))
            sizes[key] = sizes.get(key, 0) + size
        return cls(treedef, tuple(slots), tuple(sizes.items()))

    def _key(self) -> tuple:
        return self.treedef, self.slots

    def fits(self, tree: PyTree) -> bool:
        """Whether ``tree`` has the structure, shapes and dtypes this packing lays out."""
        leaves, treedef = jax.tree.flatten(tree)
        return treedef == self.treedef and all(
            (tuple(leaf.shape), jnp.dtype(leaf.dtype).name) == (slot.shape, slot.dtype)
            for leaf, slot in zip(leaves, self.slots))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Packing) and self._key() == other._key()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Packing({len(self.slots)} leaves in {dict(self.sizes)})"

    def pack(self, tree: PyTree) -> dict[str, jax.Array]:
        """``tree``'s leaves laid end to end, traced or not.

        A buffer takes the dtype of the leaves it holds, which may differ from its key's (a
        state kept in float32 for bfloat16 params).

        Args:
          tree: a tree with this packing's structure and shapes.

        Returns:
          ``{dtype name: 1-D buffer}``.
        """
        return _joined(self.parts(tree))

    def packed_and_parts(self, tree: PyTree) -> tuple[dict[str, jax.Array], dict | None]:
        """``(pack(tree), parts(tree))``, flattening the leaves once (traced or not).

        What a step's update takes: the buffers, and the unconcatenated leaves a CPU kernel
        reads instead.

        Args:
          tree: a tree with this packing's structure and shapes.

        Returns:
          ``({buffer key: 1-D buffer}, {buffer key: [1-D leaf, ...]})``.
        """
        parts = self.parts(tree)
        return _joined(parts), parts

    def parts(self, tree: PyTree) -> dict[str, list]:
        """``tree``'s leaves, 1-D, per buffer: what :meth:`pack` concatenates (traced or not).

        Args:
          tree: a tree with this packing's structure and shapes.

        Returns:
          ``{buffer key: [1-D leaf, ...]}``.
        """
        parts: dict[str, list] = {key: [] for key, _ in self.sizes}
        for slot, leaf in zip(self.slots, self.treedef.flatten_up_to(tree)):
            parts[slot.bucket].append(jnp.ravel(leaf))
        return parts

    def unpack(self, buffers: dict[str, jax.Array], offsets: Any = None) -> PyTree:
        """The tree laid out in ``buffers``, traced (slices that XLA fuses) or not.

        Args:
          buffers: ``{dtype name: 1-D buffer}`` as :meth:`pack` returns.
          offsets: optionally, each leaf's offset as a runtime int32 scalar (one array per
            leaf, :meth:`offsets`). XLA CPU compiles a kernel per distinct slice and cannot
            share one between slices at different constant offsets (~20 ms each: 20 s for 1000
            leaves); with runtime offsets, slices of one size share a kernel.

        Returns:
          The tree, each leaf a slice of its buffer in its own shape.
        """
        if offsets is None:
            leaves = [jax.lax.slice(buffers[s.bucket], (s.offset,), (s.offset + s.size,))
                      for s in self.slots]
        else:
            # The offsets are never negative: no wrap-around ops to trace for each leaf.
            leaves = [jax.lax.dynamic_slice(buffers[s.bucket], (o,), (s.size,),
                                            allow_negative_indices=False)
                      for s, o in zip(self.slots, offsets)]
        return self.treedef.unflatten([x if x.shape == s.shape else x.reshape(s.shape)
                                       for x, s in zip(leaves, self.slots)])

    def shapes(self) -> PyTree:
        """The tree, each leaf as a ``jax.ShapeDtypeStruct`` of its shape and dtype.

        A traced step checks gradients against these without slicing the buffers.

        Returns:
          A tree of this packing's structure.
        """
        return self.treedef.unflatten([jax.ShapeDtypeStruct(s.shape, jnp.dtype(s.dtype))
                                       for s in self.slots])

    def offsets(self) -> list[np.ndarray]:
        """Each leaf's offset in its buffer as an int32 scalar, for :meth:`unpack`."""
        return [np.int32(s.offset) for s in self.slots]

    def pack_state(self, state: Any) -> Any:
        """A state over the tree as the same state over the buffers.

        Args:
          state: a transform's state over a tree with this packing.

        Returns:
          The state with every field of the tree's structure (``exp_avg``, ...) packed and
          the rest (``step``) as it is: what the transform's ``init`` gives for the buffers.
        """
        fields = collect_fields(state, self.treedef)
        return replace_fields(state, self.treedef, [
            self.pack(value) if jax.tree.structure(value) == self.treedef else value
            for _, value in fields
        ])

    def unpack_state(self, state: Any, offsets: Any = None) -> Any:
        """The inverse of :meth:`pack_state`.

        Args:
          state: a state over this packing's buffers.
          offsets: as :meth:`unpack` takes them.

        Returns:
          The same state over the tree.
        """
        fields = collect_fields(state, self.flat_treedef)
        return replace_fields(state, self.flat_treedef, [
            self.unpack(value, offsets) if jax.tree.structure(value) == self.flat_treedef
            else value
            for _, value in fields
        ])


def _joined(parts: dict[str, list]) -> dict[str, jax.Array]:
    """Each buffer's 1-D leaves concatenated."""
    return {key: jnp.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            for key, arrays in parts.items()}


@functools.lru_cache(maxsize=64)
def _compiled(packing: Packing, method: str) -> Any:
    return jax.jit(getattr(packing, method))


def run(packing: Packing, method: str, value: Any, *offsets: Any) -> Any:
    """``packing.<method>(value, *offsets)`` as one compiled call (one dispatch, whatever the
    number of leaves): ``'pack'``, ``'unpack'``, ``'pack_state'`` or ``'unpack_state'``."""
    return _compiled(packing, method)(value, *offsets)


class ContiguousState(NamedTuple):
    """The state of :func:`contiguous`: the inner transform's, kept packed between steps.

    Attributes:
      inner: the inner transform's state over the buffers.
    """

    inner: Any


def contiguous(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    """``inner`` applied to the params and gradients laid end to end, one buffer per dtype.

    For elementwise transforms (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ...) the update is
    the same arithmetic: a trace and a compiled program over a few buffers instead of one per
    leaf. Unlike ``optax.flatten``, buffers keep each dtype (no promotion) and the state stays
    packed between steps; only the gradients are packed and the updates unpacked each step.
    Transforms that look at a leaf as a whole (``adafactor``'s factored moments, ``muon``'s
    orthogonalised matrices, ``lbfgs``'s own flat vectors) must not be wrapped.

    Args:
      inner: an elementwise transform.

    Returns:
      The transform; its state is :class:`ContiguousState` (``inner``'s state over buffers).
    """

    inner = with_extra_args_support(inner)

    def init(params):
        packing = Packing.of(params)
        return ContiguousState(inner.init(packing.pack(params)))

    def update(updates, state, params=None, **extra):
        packing = Packing.of(updates)
        difference = None if params is None else tree_difference(updates, params, dtypes=True)
        if difference:
            raise ValueError(f"contiguous: {difference}; contiguous(tx) packs both alike, so "
                             "each gradient needs its param's shape and dtype (cast it first)")
        flat_params = None if params is None else packing.pack(params)
        flat, new_state = inner.update(packing.pack(updates), state.inner, flat_params, **extra)
        return packing.unpack(flat), ContiguousState(new_state)

    return GradientTransformationExtraArgs(init, update)
