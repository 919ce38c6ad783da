"""One param group's parameters: what the optimizer keeps of them, and how the user sees them.

Internally a group is its tree with repeated arrays collapsed (:mod:`~optim_jax.stateful.ties`)
and names split off; the user sees it expanded and, when given so, as torch's ``(name, array)``
pairs. Besides the dict in ``param_groups``, the optimizer keeps a :class:`GroupRecord` per
group: its state, the structure of its options, its nnx Module and the ties.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.base import PyTree
from optim_jax.packing import Packing
from optim_jax.patterns import leaf_names
from optim_jax.stateful import nnx_bridge
from optim_jax.stateful.layout import checked_leaves
from optim_jax.stateful.ties import Ties


class _Required:
    """Marks a hyperparameter with no default: the constructor must be given it."""

    def __repr__(self) -> str:
        return "<required parameter>"

    def __reduce__(self) -> str:
        return "required"  # pickled by name: a copy stays the one sentinel


required = _Required()


@dataclasses.dataclass
class GroupRecord:
    """What the optimizer keeps of one group beside its ``param_groups`` dict.

    Attributes:
      state: the group's pure transform state.
      structure: the static part of its options (see ``GroupOptions.structure``).
      module: the nnx Module its params belong to, or ``None``.
      variables: that module's ``Param`` variables in leaf order, or ``None``.
      ties: where its tree repeats an array, or ``None``.
      named: whether it was given as ``(name, array)`` pairs.
      packing: how its params and state lie in contiguous buffers, or ``None`` (the tree).
      buffers: its params in those buffers (see :mod:`~optim_jax.stateful.storage`).
      state_views: ``(state, its per-leaf views)`` once made, until the next step.
      offsets: each leaf's offset in its buffer, as runtime scalars (see ``Packing.unpack``).
      local: whether its params lie on one device (``None`` until known).
      parked: state fields its options no longer use (a momentum buffer while momentum is
        0), by name, laid out as ``state``'s, kept for when they are used again.
    """

    state: Any
    structure: tuple
    module: Any = None
    variables: list | None = None
    ties: Ties | None = None
    named: bool = False
    packing: Packing | None = None
    buffers: dict | None = None
    state_views: tuple | None = None
    offsets: list | None = None
    local: bool | None = None
    parked: dict = dataclasses.field(default_factory=dict)

    def shown(self, names: list[str], tree: PyTree) -> PyTree:
        """The internal ``tree`` in the layout the user gave the group."""
        if self.ties is not None:
            tree = self.ties.expand(tree)
        return list(zip(names, tree)) if self.named else tree

    def leaves_of(self, names: list[str], tree: PyTree, treedef: Any, what: str) -> list:
        """A tree in the user's layout (gradients) as the group's internal leaves: repeated
        paths summed, ``None`` kept where a parameter has none."""
        if self.named:
            tree = _without_names(tree, names, what)
        if self.ties is not None:
            checked_leaves(tree, self.ties.treedef, what)
            tree = self.ties.collapse_sum(tree)
        return checked_leaves(tree, treedef, what)


def new_group(
    param_group: Any,
    defaults: dict[str, Any],
    options: Any,
    taken: set[int],
    named_groups: set[bool],
    modules_allowed: bool,
) -> tuple[dict, GroupRecord, list]:
    """A validated group dict, its record and the arrays given, in torch's order of checks.

    Args:
      param_group: the group as given (``'params'`` and options).
      defaults: the optimizer's defaults (``required`` marks options every group must give).
      options: the optimizer's ``GroupOptions``.
      taken: ids of the arrays other groups hold (or were given).
      named_groups: which of named / unnamed the other groups are.
      modules_allowed: whether an nnx Module may be the group's params.

    Returns:
      ``(group, record, given)``: the group with its options filled in, its ``param_names`` and
      a committed copy of its params (tied arrays collapsed); the :class:`GroupRecord`, whose
      ``state`` holds the fresh state's shapes and dtypes (``jax.ShapeDtypeStruct``) until
      :func:`optim_jax.stateful.storage.initial_state` makes it; the leaves as given.
    """
    if not isinstance(param_group, dict):
        raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
    if "params" not in param_group:
        raise ValueError(f"param group must have a 'params' key; got keys {sorted(param_group)}")
    group = dict(param_group)
    module = group["params"] if nnx_bridge.is_module(group["params"]) else None
    if module is not None:
        if not modules_allowed:
            raise ValueError(
                "labelled() takes a params pytree, not an nnx Module: pass submodules as "
                "groups, [{'params': model.base}, {'params': model.head, 'lr': 1e-3}]"
            )
        group["params"] = nnx_bridge.params_of(module)
    named = split_names(group)
    for name, default in defaults.items():
        if default is required and name not in group:
            raise ValueError(
                f"parameter group didn't specify a value of required optimization parameter {name}"
            )
        group.setdefault(name, default)
    check_params(group["params"])
    ties = Ties.find(group["params"])
    if ties is not None and isinstance(param_group["params"], (list, tuple)):
        warnings.warn(
            "optimizer contains a parameter group with duplicate parameters; in future, this "
            "will cause an error; see github.com/pytorch/pytorch/issues/40967 for more "
            "information",
            stacklevel=5,
        )
    if named_groups - {named}:
        raise ValueError(
            "all optimizer param groups should be with/without names. cannot add param group "
            f"{'with' if named else 'without'} names to the optimizer"
        )
    given = jax.tree.leaves(group["params"])
    if any(id(leaf) in taken for leaf in given):
        raise ValueError("some parameters appear in more than one parameter group")
    options.check_types(group, required=defaults)
    options.build(group)
    # A module's variables, or those of a labelled module's group (its tree holds them).
    holds_variables = any(map(nnx_bridge.is_variable,
                              jax.tree.leaves(group["params"], is_leaf=nnx_bridge.is_variable)))
    variables = nnx_bridge.variables_of(group["params"]) if holds_variables else None
    if ties is not None:
        group["params"] = ties.collapse(group["params"])
    if not named:
        group["param_names"] = leaf_names(group["params"])
    group["params"] = committed(group["params"], copy=True)  # the caller's arrays stay valid
    if variables is not None:  # the module holds the very arrays the optimizer steps
        nnx_bridge.set_values(variables, group["params"])
    structure = options.structure(group)
    return group, GroupRecord(state_shapes(options, group, structure), structure, module,
                              variables, ties, named), given


def state_shapes(options: Any, group: dict, structure: tuple) -> Any:
    """The shapes and dtypes of the group's fresh state. The state itself is made where the
    group keeps it (:func:`optim_jax.stateful.storage.initial_state`): over a contiguous
    group's buffers that is a few arrays instead of several per leaf. An ``init`` that rejects
    the params raises its own error, as when called on them."""
    init = functools.partial(options.init_state, group, structure)
    try:
        return jax.eval_shape(init, group["params"])
    except Exception:
        init(group["params"])  # raises as the transform does, without JAX's note on tracing
        raise


def split_names(group: dict[str, Any]) -> bool:
    """torch's named parameters: ``'params'`` as ``(name, array)`` pairs become the arrays and
    ``'param_names'``. Returns whether the group was named."""
    params = group["params"]
    if not isinstance(params, (list, tuple)):
        return False
    pairs = [isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params]
    if not any(pairs):
        return False
    if not all(pairs):
        raise ValueError(
            "all optimizer params should be with/without names. Some param names are missing"
        )
    group["param_names"] = [name for name, _ in params]
    group["params"] = [p for _, p in params]
    return True




def check_params(tree: PyTree) -> None:
    """Every leaf a floating (or complex) array or number, as torch optimises only those; a
    float64 NumPy leaf without ``jax_enable_x64`` warns, as it becomes float32."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = jax.tree_util.keystr(path) or "the root"
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex)):
            raise TypeError(
                f"optimizer can only optimize arrays, but the param at {where} is "
                f"{type(leaf).__name__}"
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                "optimizer can only optimize floating point or complex arrays, but the param "
                f"at {where} has dtype {dtype}"
            )
        # A jax.Array is never fetched: its value may live on another process's devices.
        if (not isinstance(leaf, jax.Array) and np.asarray(leaf).dtype == np.float64
                and dtype != jnp.float64):
            warnings.warn(
                f"the param at {where} is float64 but jax_enable_x64 is off: it is optimized "
                "in float32 (jax.config.update('jax_enable_x64', True) keeps float64)",
                UserWarning,
                stacklevel=5,
            )


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array)


def as_array(value: Any) -> jax.Array:
    """``value`` as a JAX array; a JAX array as it is (``jnp.asarray`` of one costs tens of
    microseconds, and a step's gradients may be thousands)."""
    return value if isinstance(value, jax.Array) else jnp.asarray(value)


def every_leaf(leaves: list, test: Callable[[Any], bool]) -> bool:
    """Whether ``leaves`` is not empty and ``test`` holds for each of them, where ``test``
    depends on a leaf's type alone: it runs once per type, not per leaf (a step's trees may
    have thousands of leaves, and the step's host work should not grow with them)."""
    one_of_each = dict(zip(map(type, leaves), leaves))
    return bool(one_of_each) and all(map(test, one_of_each.values()))


def committed(tree: PyTree, copy: bool = False) -> PyTree:
    """``tree`` as JAX arrays committed to their devices; with ``copy``, new buffers.

    Every step returns committed arrays; jit compiles separately for uncommitted inputs (fresh
    ``jnp.zeros``, loaded values), so without this the first step would compile twice.
    Committing an array in place copies nothing; ``copy`` is for arrays the caller keeps (given
    to the constructor or to ``load_state_dict``), which the optimizer's steps would otherwise
    donate. One batched transfer for the whole tree.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [as_array(x) for x in leaves]
    moved = [i for i, x in enumerate(arrays) if copy or not x.committed]
    if moved:
        placed = jax.device_put(
            [arrays[i] for i in moved], [arrays[i].sharding for i in moved],
            may_alias=False if copy else None,
        )
        for i, x in zip(moved, placed):
            arrays[i] = x
    return treedef.unflatten(arrays)


def gradient_for(param: Any, grad: Any, index: int, path: Any) -> Any:
    """``grad`` checked against its parameter's shape and cast to its dtype (traced)."""
    where = f"gradient of group {index} at {jax.tree_util.keystr(path) or 'the root'}"
    if jnp.shape(param) != jnp.shape(grad):
        raise ValueError(
            f"{where} has shape {jnp.shape(grad)}, the parameter has {jnp.shape(param)}"
        )
    if jnp.iscomplexobj(grad) and not jnp.iscomplexobj(param):
        raise TypeError(f"{where} is complex ({grad.dtype}), the parameter is {param.dtype}")
    return grad if grad.dtype == param.dtype else grad.astype(param.dtype)


def _without_names(tree: Any, names: list[str], what: str) -> list:
    """A named group's ``[(name, value), ...]`` as the values, checking the names."""
    if not isinstance(tree, (list, tuple)) or not all(
        isinstance(p, tuple) and len(p) == 2 for p in tree
    ):
        raise ValueError(f"{what} must be (name, array) pairs like the params, got {tree!r:.80}")
    if [name for name, _ in tree] != list(names):
        raise ValueError(f"{what} names {[n for n, _ in tree]} differ from the params' {names}")
    return [value for _, value in tree]


def gradient_leaves(
    trees: list, records: list[GroupRecord], param_groups: list[dict], treedefs: list
) -> list:
    """Gradients given in the user's layout (split into group trees) as what the optimizer
    keeps: per group ``None`` (no gradient at all) or its leaves (``None`` where a parameter
    has none). ``treedefs``: the groups' param structures.

    JAX arrays are kept as given: committing them costs a transfer call per array (tens of
    microseconds each, the whole step's time on a 1000-leaf tree), and jit moves them where the
    params are. A loop that gives uncommitted gradients one step and committed ones the next
    compiles a second program once; both stay cached."""
    groups = [
        record.leaves_of(group.get("param_names"), tree, treedef,
                         "grad" if len(trees) == 1 else f"grad of group {index}")
        for index, (tree, record, group, treedef)
        in enumerate(zip(trees, records, param_groups, treedefs))
    ]
    if all(every_leaf(leaves, _is_array) for leaves in groups):  # a check per group and type
        return groups
    arrays = iter([as_array(g) for leaves in groups for g in leaves if g is not None])
    return [
        None if all(g is None for g in leaves)
        else [None if g is None else next(arrays) for g in leaves]
        for leaves in groups
    ]


def adopt_appended(param_groups: list[dict], known: int, add: Any) -> None:
    """Group dicts appended to ``param_groups`` by hand (after the ``known`` ones) are added
    with ``add`` (``add_param_group``), as torch steps such a group; an invalid one stays where
    it was and the error says why."""
    if len(param_groups) < known:
        raise RuntimeError(
            f"opt.param_groups has {len(param_groups)} groups, the optimizer had {known}: "
            "groups cannot be removed from a running optimizer"
        )
    appended = param_groups[known:]
    del param_groups[known:]
    for done, group in enumerate(appended):
        try:
            add(group)
        except Exception:
            param_groups.extend(appended[done:])
            raise


def describe(name: str, param_groups: list[dict]) -> str:
    """torch's ``repr`` of an optimizer: each group's options, one per line."""
    lines = [f"{name} ("]
    for i, group in enumerate(param_groups):
        lines.append(f"Parameter Group {i}")
        lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
    return "\n".join(lines + [")"])
