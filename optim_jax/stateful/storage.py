"""Where a group's params and state live between steps: its tree, or contiguous buffers.

A group of an elementwise algorithm (``SGD``, ``Adam``, ...) of at least :data:`MIN_LEAVES`
arrays keeps its params and state in contiguous buffers: one per dtype where the arrays sit on
one device (:mod:`optim_jax.packing`), one per dtype and sharding where they are sharded over a
mesh (:mod:`optim_jax.sharded_packing`; each device keeps the bytes it kept before). A step
then passes a handful of arrays across the jit boundary however many leaves the tree has, and
traces its update once over the buffers. The user sees only the tree: the group's ``'params'``
are made from the buffers when read (:class:`ParamGroup`, one compiled call), and
``opt.state`` and ``state_dict()`` unpack the state the same way (an nnx Module's group makes
its tree after every step, to write it into the module). Params spread otherwise (over several
meshes, not by a ``NamedSharding``), ZeRO's state layout and algorithms that look at a
leaf as a whole (L-BFGS, Adafactor, Muon) keep the tree.

What a step takes for a group (*held* params) is its buffers, or its tree; :func:`views` turns
held params back into trees inside a compiled program.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import jax
import jax.numpy as jnp

from optim_jax.base import PyTree
from optim_jax.packing import LARGE, Packing, run
from optim_jax.sharded_packing import ShardedPacking
from optim_jax.state_fields import collect_fields
from optim_jax.stateful import nnx_bridge
from optim_jax.stateful.groups import committed
from optim_jax.stateful.param_group import ParamGroup


MIN_LEAVES = 8


def packing_for(tree: PyTree, state: Any, allowed: bool, shared_up_to: int = LARGE
                ) -> Packing | None:
    """The packing a group's committed ``tree`` and its ``state`` are kept in, or ``None`` to
    keep the tree: where the group's arrays sit on one device (or are sharded over one mesh)
    and every per-parameter state field has its parameter's shape and one dtype per buffer
    (complex params keep a real view of another shape: they keep the tree). On one device,
    leaves of up to ``shared_up_to`` elements share their dtype's buffer."""
    leaves, structure = jax.tree.flatten(tree)
    # Below MIN_LEAVES the arrays a step saves (a few microseconds each) do not repay the
    # programs packing compiles (the packing itself, the views). A bare array's state fields
    # could not be told from its scalars (``step``) by structure anyway.
    if not allowed or len(leaves) < MIN_LEAVES or jax.tree_util.treedef_is_leaf(structure):
        return None
    packing = (Packing.of(tree, shared_up_to) if on_one_device(leaves)
               else ShardedPacking.of(tree))
    if packing is None:
        return None
    for _, field in collect_fields(state, structure):
        if jax.tree.structure(field) != structure:
            continue
        kinds = {}
        for slot, leaf in zip(packing.slots, jax.tree.leaves(field)):
            if tuple(leaf.shape) != slot.shape or kinds.setdefault(slot.bucket, leaf.dtype) != leaf.dtype:
                return None
    return packing


def on_one_device(tree: PyTree) -> bool:
    """Whether the tree's arrays all lie on one device (host arrays go where jit puts them)."""
    devices = set()
    for leaf in jax.tree.leaves(tree):
        devices.update(getattr(getattr(leaf, "sharding", None), "device_set", ()))
    return len(devices) <= 1


def local(group: dict, record: Any) -> bool:
    """Whether the group's params lie on one device: known for a packing, found once for a
    tree and again when the tree has been replaced (an nnx group's, once)."""
    if record.packing is not None:
        return record.packing.one_device
    replaced = not (isinstance(group, ParamGroup) and group.is_current())
    if record.local is None or (replaced and record.variables is None):
        record.local = on_one_device(group["params"])
    return record.local


def placement(group: dict, record: Any) -> tuple | None:
    """For a sharded group kept as a tree, the shardings of its params' and its state's leaves,
    which a step keeps: XLA would otherwise choose its outputs' from the program (a closure's
    matmuls can move a weight's). ``None`` for the others: a packing lays its buffers out
    itself, and one device has nothing to keep."""
    if record.packing is not None or local(group, record):
        return None
    return (tuple(leaf.sharding for leaf in jax.tree.leaves(group["params"])),
            tuple(leaf.sharding for leaf in jax.tree.leaves(record.state)))


def placed(tree: Any, shardings: tuple) -> Any:
    """Traced: ``tree`` with each leaf constrained to its sharding."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([jax.lax.with_sharding_constraint(leaf, sharding)
                              for leaf, sharding in zip(leaves, shardings)])


def held(group: dict, record: Any, index: int) -> Any:
    """The group's params as a step takes them; params written into the group since the last
    step (``group['params'] = tree``) are packed first."""
    if record.packing is None:
        return group["params"]
    if isinstance(group, ParamGroup) and group.is_current():
        return record.buffers
    tree = group["params"]
    if not record.packing.fits(tree):
        raise ValueError(
            f"param_groups[{index}]['params'] was replaced by {_difference(tree, record.packing)}"
            "; replace the values only, with arrays of the same shapes and dtypes"
        )
    record.buffers = run(record.packing, "pack", tree)
    return record.buffers


def _difference(tree: PyTree, packing: Packing) -> str:
    """How ``tree`` differs from the tree ``packing`` lays out."""
    flat, structure = jax.tree_util.tree_flatten_with_path(tree)
    if structure != packing.treedef:
        return f"a tree of structure {structure}, the params have {packing.treedef}"
    for (path, leaf), slot in zip(flat, packing.slots):
        if (tuple(leaf.shape), jnp.dtype(leaf.dtype).name) != (slot.shape, slot.dtype):
            return (f"a tree whose leaf at {jax.tree_util.keystr(path)} is "
                    f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}, the param is "
                    f"{slot.dtype}{list(slot.shape)}")
    return "another tree"


def keep(group: dict, record: Any, new: Any) -> None:
    """A step's new held params become the group's, and its nnx Module's; a contiguous group's
    earlier views are deleted, as the tree's donated arrays would be. A contiguous group makes
    its tree when first read, but a module's needs it at once (one compiled call)."""
    if record.packing is None:
        if isinstance(group, ParamGroup):
            group.show(new)
        else:
            group["params"] = new
    else:
        record.buffers = new
        views = functools.partial(run, record.packing, "unpack", new, record.offsets)
        if not isinstance(group, ParamGroup):
            group["params"] = views()
        else:
            for leaf in group.shown_leaves():
                leaf.delete()
            if record.variables is None:
                group.defer(views)
                return
            group.show(views(), watch=True)
    if record.variables is not None:
        nnx_bridge.set_values(record.variables, group["params"])


def treedef(group: dict, record: Any) -> Any:
    """The structure of the group's params (without making them)."""
    if record.packing is not None and isinstance(group, ParamGroup) and group.is_current():
        return record.packing.treedef
    return jax.tree.structure(group["params"])


def views(packings: tuple, held_params: list, offsets: list) -> list:
    """Traced: every group's params as its tree (``offsets``: the groups' runtime offsets)."""
    return [value if packing is None else packing.unpack(value, offs)
            for packing, value, offs in zip(packings, held_params, offsets)]


def placed_offsets(packing: Packing, buffers: dict) -> list:
    """The packing's offsets as int32 scalars on the buffers' device (made once per group)."""
    device = next(iter(buffers.values())).sharding
    return jax.device_put(packing.offsets(), device)


def leaf_state(record: Any) -> Any:
    """The group's state over its tree (per-parameter fields per leaf), made once per step."""
    if record.packing is None:
        return record.state
    if record.state_views is None or record.state_views[0] is not record.state:
        record.state_views = record.state, run(record.packing, "unpack_state", record.state,
                                               record.offsets)
    return record.state_views[1]


@functools.lru_cache(maxsize=64)
def _fields_type(names: tuple[str, ...]) -> type:
    """A NamedTuple type with these field names: how a state holds named fields."""
    return collections.namedtuple("ParkedFields", names)


def parked_fields(record: Any) -> Any:
    """The group's parked fields (see ``GroupRecord``) as a state over its tree."""
    names = tuple(sorted(record.parked))
    fields = _fields_type(names)(*(record.parked[n] for n in names))
    if record.packing is None:
        return fields
    return run(record.packing, "unpack_state", fields, record.offsets)


def migrate(options: Any, group: dict, record: Any, index: int, structure: tuple) -> None:
    """The group's state taken to its options' new ``structure``, fields it no longer uses
    parked (``GroupOptions.migrated``)."""
    state, record.parked = options.migrated(record.state, group, structure,
                                            held(group, record, index), record.parked)
    record.state, record.structure = committed(state), structure


def stored_fields(record: Any, fields: dict) -> dict:
    """Fields over the group's tree (by name) laid out as the group keeps its state."""
    if not fields or record.packing is None:
        return fields
    names = tuple(sorted(fields))
    packed = run(record.packing, "pack_state", _fields_type(names)(*(fields[n] for n in names)))
    return dict(zip(names, packed))


def discard_state_views(record: Any) -> None:
    """Deletes the views of the state a step replaces, as the tree's donated state would be."""
    if record.state_views is not None and record.state_views[0] is record.state:
        for leaf in jax.tree.leaves(record.state_views[1]):
            leaf.delete()
    record.state_views = None


def initial_state(record: Any, init: Any, params: PyTree, buffers: dict | None) -> Any:
    """A new group's fresh state, ``init(params)``, committed as the group keeps it. Over a
    packing on one device, ``init(buffers)``: an elementwise transform's state over the buffers
    is its state over the tree packed (each field's zeros or fill, laid out alike), made as a
    few arrays instead of several per leaf (1000 leaves: ~0.3 s of eager calls and a packing
    program saved). A sharded packing packs the tree's, which keeps each leaf's sharding."""
    if record.packing is None:
        return committed(init(params))
    if record.packing.one_device:
        return committed(init(buffers))
    return committed(stored_state(record, init(params)))


def stored_state(record: Any, state: Any) -> Any:
    """A state over the group's tree as the group keeps it."""
    return state if record.packing is None else run(record.packing, "pack_state", state)


class GroupStorage:
    """The optimizer's groups as programs take them and as the user sees them: held params,
    states (kept or per leaf), and a step's results taken up (nnx Modules included)."""

    param_groups: list
    _records: list

    def _group_params(self) -> list:
        """The groups' params as trees (made from buffers where deferred)."""
        return [g["params"] for g in self.param_groups]

    def _states(self) -> list:
        return [r.state for r in self._records]

    def _leaf_states(self) -> list:
        """Each group's state over its tree, with its parked fields after it (torch's state
        shows a momentum buffer while momentum is 0)."""
        return [(leaf_state(r), parked_fields(r)) if r.parked else leaf_state(r)
                for r in self._records]

    def _held(self) -> list:
        """Each group's params as a step takes them (its buffers, or its tree)."""
        return [held(g, r, i) for i, (g, r) in enumerate(zip(self.param_groups, self._records))]

    def _packings(self) -> tuple:
        return tuple(r.packing for r in self._records)

    def _locals(self) -> tuple:
        """Per group, whether its params lie on one device (see :func:`local`)."""
        return tuple(local(g, r) for g, r in zip(self.param_groups, self._records))

    def _placements(self) -> tuple:
        """Per group, the shardings a step keeps (see :func:`placement`)."""
        return tuple(placement(g, r) for g, r in zip(self.param_groups, self._records))

    def _step_layout(self) -> tuple:
        """What a step's program is traced for, besides the options: per group, its packing,
        whether it is local, the shardings it keeps."""
        return self._packings(), self._locals(), self._placements()

    def _offsets(self) -> list:
        return [r.offsets for r in self._records]

    def _adopt_module_values(self) -> None:
        """Takes up values put into the groups' nnx Modules since the last step."""
        for group, record in zip(self.param_groups, self._records):
            if record.variables is not None:
                group["params"] = nnx_bridge.adopted(record.variables, group["params"], committed)

    def _commit(self, new_held: list, states: list, modules: list, changed: dict) -> None:
        """A step's results become the current params and state; nnx Modules get them too."""
        for group, record, value, state in zip(self.param_groups, self._records, new_held,
                                               states):
            keep(group, record, value)
            discard_state_views(record)
            record.state = state
        nnx_bridge.write_back(modules, changed)
