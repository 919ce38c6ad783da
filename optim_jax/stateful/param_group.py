"""A ``param_groups`` dict whose ``'params'`` are made when first read.

A group kept in contiguous buffers (:mod:`optim_jax.packing`) shows its params as the
user's tree only when somebody looks: after a step, ``'params'`` is *deferred*, and the first
read of it (``group['params']``, ``dict(group)``, ``group.items()``, printing, copying,
pickling) makes the tree in one compiled call. Writing ``'params'`` (``group['params'] = tree``)
replaces the deferred value; the optimizer then takes the written tree at its next step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax


class _Deferred:
    def __repr__(self) -> str:
        return "<params made when read>"


_DEFERRED = _Deferred()


class ParamGroup(dict):
    """A group dict (options and ``'params'``), with ``'params'`` possibly deferred."""

    _make: Callable[[], Any] | None = None
    _shown: Any = None
    _leaves: tuple | None = None  # the arrays shown, where watched (see ``show``)

    def defer(self, make: Callable[[], Any]) -> None:
        """``'params'`` becomes ``make()`` when first read."""
        self._make, self._shown, self._leaves = make, _DEFERRED, None
        dict.__setitem__(self, "params", _DEFERRED)

    def show(self, tree: Any, watch: bool = False) -> None:
        """``'params'`` is ``tree``, as the optimizer holds it; with ``watch``, its leaves are
        remembered, so that one written over is noticed (views of buffers: the tree kept by a
        group is what its steps read, so it needs no watching)."""
        self._make, self._shown = None, tree
        self._leaves = tuple(jax.tree.leaves(tree)) if watch else None
        dict.__setitem__(self, "params", tree)

    def shown_leaves(self) -> tuple:
        """The watched arrays the optimizer showed in ``'params'`` (none while deferred)."""
        return self._leaves or ()

    def is_deferred(self) -> bool:
        return self._make is not None and dict.get(self, "params") is _DEFERRED

    def is_current(self) -> bool:
        """Whether ``'params'`` is still what the optimizer holds: deferred, or shown with
        nobody having written over it or over one of its leaves (``group['params'][0] = x``,
        as torch users write into ``p.data``)."""
        if self.is_deferred():
            return True
        if self._shown is None or dict.get(self, "params") is not self._shown:
            return False
        if self._leaves is None:
            return True
        leaves = jax.tree.leaves(self._shown)
        return len(leaves) == len(self._leaves) and all(
            a is b for a, b in zip(leaves, self._leaves))

    def renewed(self, new: dict) -> "ParamGroup":
        """``new`` (this group's options changed, its params the same) as a group that is as
        current as this one."""
        group = ParamGroup({k: v for k, v in new.items() if k != "params"})
        if self.is_deferred():
            group.defer(self._make)
        else:
            group.show(new["params"], watch=self._leaves is not None)
        return group

    @classmethod
    def showing(cls, group: dict) -> "ParamGroup":
        """``group`` (a dict) as a ParamGroup showing its ``'params'``."""
        result = group if isinstance(group, ParamGroup) else cls(group)
        result.show(dict.__getitem__(result, "params"))
        return result

    def settle(self) -> None:
        """Makes a deferred ``'params'``."""
        if self.is_deferred():
            self.show(self._make(), watch=True)

    # Every read of a value goes through settle(); __iter__ is overridden so that dict(group)
    # and {**group} read through __getitem__ instead of the dict's own storage.
    def __getitem__(self, key: Any) -> Any:
        if key == "params":
            self.settle()
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key == "params":
            self.settle()
        return dict.get(self, key, default)

    def __iter__(self):
        return dict.__iter__(self)

    def items(self):
        self.settle()
        return dict.items(self)

    def values(self):
        self.settle()
        return dict.values(self)

    def copy(self) -> dict:
        self.settle()
        return dict(dict.items(self))

    def pop(self, key: Any, *default: Any) -> Any:
        self.settle()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple:
        self.settle()
        return dict.popitem(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.settle()
        return dict.setdefault(self, key, default)

    def __eq__(self, other: Any) -> bool:
        self.settle()
        if isinstance(other, ParamGroup):
            other.settle()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self.settle()
        return dict.__repr__(self)

    def __reduce__(self) -> tuple:
        self.settle()
        return (ParamGroup, (dict(dict.items(self)),))
