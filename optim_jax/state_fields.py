"""Reading and replacing a pure state's fields by name, for torch's per-parameter state view.

A state is a nest of NamedTuples (and tuples, dicts). A *field* is a NamedTuple entry that is
either a tree with the params' structure (``exp_avg``, or L-BFGS's ``old_dirs`` whose leaves add
a history axis: one entry per parameter) or an array (``step``, or L-BFGS's ``ro``: shared by the
group). Field names are torch's state names.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def _is_field(value: Any, treedef: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray)) or jax.tree.structure(value) == treedef


def _walk(state: Any, treedef: Any, fn: Callable[[str, Any], Any]) -> Any:
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(
            *(
                value if value is None
                else fn(name, value) if _is_field(value, treedef)
                else _walk(value, treedef, fn)
                for name, value in zip(state._fields, state)
            )
        )
    if isinstance(state, (tuple, list)):
        return type(state)(_walk(v, treedef, fn) for v in state)
    if isinstance(state, dict):
        return {k: _walk(v, treedef, fn) for k, v in state.items()}
    return state


def collect_fields(state: Any, treedef: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` of every field, in a fixed walk order.

    A name may come twice: two blocks of a chain may each count torch's ``step`` (RMSprop's
    running mean and its momentum). They count the same steps; torch's per-parameter view
    shows the first, and loading writes the saved value into each.
    """
    fields: list[tuple[str, Any]] = []

    def record(name, value):
        fields.append((name, value))
        return value

    _walk(state, treedef, record)
    return fields


def replace_fields(state: Any, treedef: Any, values: list) -> Any:
    """``state`` with its fields, in :func:`collect_fields` order, replaced by ``values``."""
    remaining = iter(values)
    return _walk(state, treedef, lambda name, value: next(remaining))
