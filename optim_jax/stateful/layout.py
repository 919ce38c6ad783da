"""How the params a user gives map onto param groups, and back.

Three layouts, as ``opt.params`` shows them: one pytree (one group); a list of group dicts
(torch's per-parameter options; ``opt.params`` is the list of group trees); or one pytree split
by labels (:func:`labelled`; ``opt.params`` stays the whole tree). Each layout splits a tree the
user gives in it (``opt.grad = ...``) into group trees and assembles group trees back.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax

from optim_jax.base import PyTree
from optim_jax.combine import label_leaves
from optim_jax.patterns import DEFAULT, pattern_labels
from optim_jax.stateful import nnx_bridge


class Labelled:
    """One parameter tree split into groups by labels: made by :func:`labelled`.

    Attributes:
      groups: the group dicts, each ``'params'`` the tree with other groups' leaves ``None``.
      treedef: the whole tree's structure.
      labels: each leaf's label, in leaf order.
      order: the labels in group order.
      module: the nnx Module whose params were labelled, or ``None``.
    """

    def __init__(
        self, groups: list[dict], treedef: Any, labels: list, order: list, module: Any = None
    ):
        self.groups, self.treedef, self.labels, self.order = groups, treedef, labels, order
        self.module = module


def labelled(params: PyTree, labels: Any, groups: Mapping[Any, Mapping[str, Any]]) -> Labelled:
    """Param groups over one tree, so ``opt.params`` stays the user's whole tree.

    Args:
      params: the parameter pytree, or an nnx Module (its ``nnx.Param`` variables are labelled,
        ``labels`` then has the structure of ``nnx.state(module, nnx.Param)``; the optimizer
        writes the new values into the module and closures receive the module).
      labels: group labels as :func:`optim_jax.partition` takes them: a pytree with ``params``'
        structure or a prefix of it, or a function ``params -> labels``.
      groups: per-label options overriding the optimiser's defaults, in group order, e.g.
        ``{'base': {}, 'classifier': {'lr': 1e-3}}``. Every label used must be a key.

    Returns:
      A value to pass as an optimiser's ``params``; ``opt.param_groups[i]['params']`` is then the
      tree with other groups' leaves replaced by ``None``.
    """
    module = params if nnx_bridge.is_module(params) else None
    if module is not None:
        params = nnx_bridge.params_of(module)
    leaves, treedef, flat_labels = label_leaves(labels, params, nnx_bridge.is_variable)
    flat_labels = [nnx_bridge.unwrapped(label) for label in flat_labels]
    missing = sorted({repr(label) for label in flat_labels if label not in groups})
    if missing:
        raise ValueError(f"labels {', '.join(missing)} have no entry in groups {list(groups)}")
    group_list = [
        {
            **dict(options),
            "params": treedef.unflatten(
                [leaf if lab == label else None for leaf, lab in zip(leaves, flat_labels)]
            ),
        }
        for label, options in groups.items()
    ]
    return Labelled(group_list, treedef, flat_labels, list(groups), module)


def groups_by_pattern(
    params: PyTree, patterns: Mapping[str, Mapping[str, Any]]
) -> Labelled:
    """Param groups by name pattern: ``{regex: options}``, first match wins, the rest default.

    ``AdamW(groups_by_pattern(params, {r'(bias|scale)$': {'weight_decay': 0.0}}), lr=1e-3,
    weight_decay=0.1)``: biases and norm scales without weight decay, every other parameter
    in a last group with the optimizer's defaults. Names are the leaves' dotted key paths
    (:func:`optim_jax.patterns.leaf_names`); groups follow the patterns' order, the default
    group (label ``'default'``) last when some leaf matches no pattern. ``opt.params`` stays
    the whole tree (or the nnx Module).

    Args:
      params: the parameter pytree or an nnx Module.
      patterns: regular expression -> options overriding the optimizer's defaults.

    Returns:
      A value to pass as an optimizer's ``params`` (see :func:`labelled`).

    Raises:
      ValueError: naming every pattern that matches no parameter.
    """
    target = nnx_bridge.params_of(params) if nnx_bridge.is_module(params) else params
    labels = pattern_labels(target, patterns)
    groups = {pattern: dict(options) for pattern, options in patterns.items()}
    if DEFAULT in jax.tree.leaves(labels):
        groups[DEFAULT] = {}
    return labelled(params, labels, groups)


class TreeLayout:
    """One pytree, one group: ``opt.params`` is the tree."""

    def assemble(self, trees: list) -> PyTree:
        return trees[0]

    def split(self, tree: PyTree, count: int, what: str) -> list:
        return [tree]

    def grown(self) -> "GroupListLayout":
        """The layout once ``add_param_group`` added a group: a list of group trees."""
        return GroupListLayout()


class GroupListLayout:
    """torch's list of group dicts: ``opt.params`` is the list of the groups' trees."""

    def assemble(self, trees: list) -> PyTree:
        return list(trees)

    def split(self, tree: PyTree, count: int, what: str) -> list:
        if not isinstance(tree, (list, tuple)) or len(tree) != count:
            raise ValueError(
                f"{what} must be a list of {count} group trees like opt.params, got "
                f"{type(tree).__name__}"
            )
        return list(tree)

    def grown(self) -> "GroupListLayout":
        return self


class LabelledLayout:
    """One pytree split by labels: ``opt.params`` is the whole tree."""

    def __init__(self, labelled_params: Labelled):
        self.treedef = labelled_params.treedef
        self.labels, self.order = labelled_params.labels, labelled_params.order
        self.module = labelled_params.module

    def assemble(self, trees: list) -> PyTree:
        if self.module is not None:
            return self.module
        flat = [self.treedef.flatten_up_to(t) for t in trees]
        return self.treedef.unflatten(
            [flat[self.order.index(lab)][i] for i, lab in enumerate(self.labels)]
        )

    def split(self, tree: PyTree, count: int, what: str) -> list:
        leaves = checked_leaves(tree, self.treedef, what)
        return [
            self.treedef.unflatten([x if lab == label else None for x, lab in zip(leaves, self.labels)])
            for label in self.order
        ]

    def grown(self) -> "LabelledLayout":
        raise ValueError(
            "add_param_group is not available when params are labelled(); build the "
            "optimizer with all groups in labelled(..., groups={...})"
        )


def layout_of(params: Any) -> tuple[Any, list]:
    """The layout of ``params`` as an optimizer was given them, and its group dicts."""
    if isinstance(params, Labelled):
        return LabelledLayout(params), list(params.groups)
    if _is_group_list(params):
        return GroupListLayout(), list(params)
    return TreeLayout(), [{"params": params}]


def checked_leaves(tree: PyTree, treedef: Any, what: str) -> list:
    """``tree``'s leaves at ``treedef``'s leaf positions (``None`` allowed there), or an error
    naming ``what`` and both structures."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        raise ValueError(
            f"{what} has structure {jax.tree.structure(tree)}, but the params have {treedef}"
        ) from None


def _is_group_list(params: Any) -> bool:
    return (
        isinstance(params, (list, tuple))
        and len(params) > 0
        and all(isinstance(g, dict) for g in params)
        and any("params" in g for g in params)
    )
