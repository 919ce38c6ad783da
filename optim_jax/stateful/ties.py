"""One array at several places of a params tree (tied weights): one parameter, as in torch.

torch optimises a tensor once however often it is listed, and its gradient sums every use. A
group whose tree holds the same array at several paths is stored *collapsed* (the later paths
hold ``None``, so the step, the state and ``state_dict`` see one parameter) and shown *expanded*
(the updated array at every path). Gradients given in the expanded layout are summed into the
first path; a closure evaluated at the expanded tree gets that sum from ``jax.grad`` itself.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class Ties:
    """Where a tree repeats a leaf: build with :meth:`find`."""

    def __init__(self, treedef: Any, source: list[int], first: list[bool]):
        self.treedef = treedef  # the expanded tree's structure
        self.source = source  # for each expanded leaf, its index among the collapsed leaves
        self.first = first  # whether each expanded leaf is its array's first occurrence

    @classmethod
    def find(cls, tree: Any) -> "Ties | None":
        """The ties of ``tree``'s leaves by identity, or ``None`` if every leaf is distinct."""
        leaves, treedef = jax.tree.flatten(tree)
        seen: dict[int, int] = {}
        source, first = [], []
        for leaf in leaves:
            first.append(id(leaf) not in seen)
            source.append(seen.setdefault(id(leaf), len(seen)))
        if all(first):
            return None
        return cls(treedef, source, first)

    def collapse(self, tree: Any) -> Any:
        """The expanded ``tree`` with each repeated path set to ``None``."""
        leaves = self.treedef.flatten_up_to(tree)
        return self.treedef.unflatten([x if f else None for x, f in zip(leaves, self.first)])

    def collapse_sum(self, tree: Any) -> Any:
        """Expanded gradients collapsed, each parameter's paths summed (``None`` paths skipped;
        a parameter with no gradient anywhere gets ``None``)."""
        leaves = self.treedef.flatten_up_to(tree)
        sums: list[Any] = [None] * (max(self.source) + 1)
        for value, s in zip(leaves, self.source):
            if value is not None:
                sums[s] = value if sums[s] is None else jnp.add(sums[s], value)
        return self.treedef.unflatten(
            [sums[s] if f else None for s, f in zip(self.source, self.first)]
        )

    def expand(self, tree: Any) -> Any:
        """A collapsed ``tree`` with every path filled from its parameter."""
        leaves = self.treedef.flatten_up_to(tree)  # None at the repeated paths
        unique = [x for x, f in zip(leaves, self.first) if f]
        return self.treedef.unflatten([unique[s] for s in self.source])
