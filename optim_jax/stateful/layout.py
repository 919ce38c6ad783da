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


class Labelled:
    """One parameter tree split into groups by labels: made by :func:`labelled`.

    Attributes:
      groups: the group dicts, each ``'params'`` the tree with other groups' leaves ``None``.
      treedef: the whole tree's structure.
      labels: each leaf's label, in leaf order.
      order: the labels in group order.
    """

    def __init__(self, groups: list[dict], treedef: Any, labels: list, order: list):
        self.groups, self.treedef, self.labels, self.order = groups, treedef, labels, order


def labelled(params: PyTree, labels: Any, groups: Mapping[Any, Mapping[str, Any]]) -> Labelled:
    """Param groups over one tree, so ``opt.params`` stays the user's whole tree.

    Args:
      params: the parameter pytree.
      labels: group labels as :func:`optim_jax.partition` takes them: a pytree with ``params``'
        structure or a prefix of it, or a function ``params -> labels``.
      groups: per-label options overriding the optimiser's defaults, in group order, e.g.
        ``{'base': {}, 'classifier': {'lr': 1e-3}}``. Every label used must be a key.

    Returns:
      A value to pass as an optimiser's ``params``; ``opt.param_groups[i]['params']`` is then the
      tree with other groups' leaves replaced by ``None``.
    """
    leaves, treedef, flat_labels = label_leaves(labels, params)
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
    return Labelled(group_list, treedef, flat_labels, list(groups))


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

    def assemble(self, trees: list) -> PyTree:
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
