"""One param group's parameters: what the optimizer keeps of them, and how the user sees them.

Internally a group is its tree with repeated arrays collapsed (:mod:`~optim_jax.stateful.ties`)
and names split off; the user sees it expanded and, when given so, as torch's ``(name, array)``
pairs. Besides the dict in ``param_groups``, the optimizer keeps a :class:`GroupRecord` per
group: its state, the structure of its options, its nnx Module and the ties.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.base import PyTree
from optim_jax.stateful.layout import checked_leaves
from optim_jax.stateful.ties import Ties


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
    """

    state: Any
    structure: tuple
    module: Any = None
    variables: list | None = None
    ties: Ties | None = None
    named: bool = False

    def shown(self, names: list[str], tree: PyTree) -> PyTree:
        """The internal ``tree`` in the layout the user gave the group."""
        if self.ties is not None:
            tree = self.ties.expand(tree)
        return list(zip(names, tree)) if self.named else tree

    def leaves_of(self, names: list[str], tree: PyTree, params: PyTree, what: str) -> list:
        """A tree in the user's layout (gradients) as the group's internal leaves: repeated
        paths summed, ``None`` kept where a parameter has none."""
        if self.named:
            tree = _without_names(tree, names, what)
        if self.ties is not None:
            checked_leaves(tree, self.ties.treedef, what)
            tree = self.ties.collapse_sum(tree)
        return checked_leaves(tree, jax.tree.structure(params), what)


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


def path_names(tree: PyTree) -> list[str]:
    """Each leaf's key path, as ``jax.tree_util.keystr`` writes it: a pytree's param names."""
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


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
        if np.asarray(leaf).dtype == np.float64 and dtype != jnp.float64 and not isinstance(leaf, jax.Array):
            warnings.warn(
                f"the param at {where} is float64 but jax_enable_x64 is off: it is optimized "
                "in float32 (jax.config.update('jax_enable_x64', True) keeps float64)",
                UserWarning,
                stacklevel=5,
            )


def committed(tree: PyTree, copy: bool = False) -> PyTree:
    """``tree`` as JAX arrays committed to their devices; with ``copy``, new buffers.

    Every step returns committed arrays; jit compiles separately for uncommitted inputs (fresh
    ``jnp.zeros``, loaded values), so without this the first step would compile twice.
    Committing an array in place copies nothing; ``copy`` is for arrays the caller keeps (given
    to the constructor or to ``load_state_dict``), which the optimizer's steps would otherwise
    donate. One batched transfer for the whole tree.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [jnp.asarray(x) for x in leaves]
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
    return grad.astype(param.dtype)


def _without_names(tree: Any, names: list[str], what: str) -> list:
    """A named group's ``[(name, value), ...]`` as the values, checking the names."""
    if not isinstance(tree, (list, tuple)) or not all(
        isinstance(p, tuple) and len(p) == 2 for p in tree
    ):
        raise ValueError(f"{what} must be (name, array) pairs like the params, got {tree!r:.80}")
    if [name for name, _ in tree] != list(names):
        raise ValueError(f"{what} names {[n for n, _ in tree]} differ from the params' {names}")
    return [value for _, value in tree]
