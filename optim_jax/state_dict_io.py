"""torch's ``state_dict`` layout over the pure states: per-parameter entries out, states back in.

A group's pure state is a nest of NamedTuples whose fields carry torch's state names
(:mod:`optim_jax.state_fields`). ``state_dict()`` lists them per parameter, as torch does;
loading gathers them back into the state, checking every name, shape and dtype against a fresh
state before anything changes. Loading copies every array it keeps, so a dict the user holds stays
valid after any number of later (donating) steps.

What a torch checkpoint may leave out, and how it is read:
  * a parameter with no entry (it never had a gradient, or the dict was saved before the first
    step): its state starts fresh, as torch's would;
  * ``step`` next to a ``momentum_buffer`` (torch's SGD and Muon keep no step count): the buffer
    exists, so a step was taken; optim_jax's ``step`` is then 1, which is all it is used for;
  * a field optim_jax keeps as an empty placeholder (Adafactor's factors of a vector).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.state_fields import collect_fields


def listed(value: Any) -> list:
    """A list saved by msgpack may come back as a dict keyed '0', '1', ..."""
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value, key=int)]
    return list(value)


def field_leaf(value: Any, treedef: Any, i: int) -> Any:
    """Parameter ``i``'s entry of a state field, or ``None`` if it has none.

    A field with the params' tree structure gives each parameter its leaf, whatever its shape
    (L-BFGS's history leaves add a leading axis); a scalar (``step``) is repeated for every
    parameter, as torch keeps one per parameter; any other array (L-BFGS's ``ro``) belongs to
    the group's first parameter, as in torch.
    """
    if jax.tree.structure(value) == treedef:
        return jax.tree.leaves(value)[i]
    return value if np.ndim(value) == 0 or i == 0 else None


def per_param_entries(trees: list, states: list) -> dict[int, dict[str, Any]]:
    """torch's ``state``: ``{index: {name: array}}`` over every group's parameters."""
    entries, index = {}, 0
    for params, state in zip(trees, states):
        treedef = jax.tree.structure(params)
        fields = collect_fields(state, treedef)
        for i in range(treedef.num_leaves):
            entry = {name: field_leaf(value, treedef, i) for name, value in fields}
            entry = {name: value for name, value in entry.items() if value is not None}
            if entry:
                entries[index + i] = entry
        index += treedef.num_leaves
    return entries


def restore_options(saved: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    """A saved group's options as the group holds them (tuples, Python scalars), copied."""
    options = {}
    for name, value in saved.items():
        if name == "params":
            continue
        current = group.get(name)
        if name == "param_names" or isinstance(current, list):
            value = [str(v) for v in listed(value)] if name == "param_names" else listed(value)
        elif isinstance(current, tuple) and not isinstance(value, tuple):
            value = tuple(listed(value))
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        options[name] = value
    return options


def _saved_value(name: str, entry: Mapping[str, Any], i: int, expected: Any) -> Any:
    if entry.get(name) is not None:
        return entry[name]
    if name == "step" and entry.get("momentum_buffer") is not None:
        return 1  # torch's SGD and Muon keep no count: a buffer means a step was taken
    if np.size(expected) == 0:
        return expected  # a placeholder torch does not keep (Adafactor's unused factors)
    raise ValueError(f"loaded state for parameter {i} has no '{name}'")


def gather_field(
    name: str, template: Any, treedef: Any, indices: list[int], saved_state: Mapping[int, Any]
) -> Any:
    """A state field rebuilt from the saved per-parameter entries, checked against ``template``
    (the fresh state's field, which also fills in parameters with no saved entry)."""
    per_param = jax.tree.structure(template) == treedef
    if not per_param and np.ndim(template) > 0:
        indices = indices[:1]  # kept under the group's first parameter
    leaves = jax.tree.leaves(template) if per_param else [template] * len(indices)
    values = []
    for i, expected in zip(indices, leaves):
        entry = {k: v for k, v in (saved_state.get(i) or {}).items() if v is not None}
        if not entry:  # never stepped: fresh, as torch starts it
            values.append(expected if per_param else None)
            continue
        value = jnp.asarray(_saved_value(name, entry, i, expected))
        if value.shape != expected.shape:
            raise ValueError(
                f"loaded '{name}' for parameter {i} has shape {value.shape}, expected "
                f"{expected.shape}"
            )
        if value.dtype != expected.dtype:
            if per_param:
                raise ValueError(
                    f"loaded '{name}' for parameter {i} has dtype {value.dtype}, expected "
                    f"{expected.dtype}"
                )
            value = value.astype(expected.dtype)
        # A copy where init put it (ZeRO's layout too): the caller's dict keeps its arrays.
        values.append(jax.device_put(value, expected.sharding, may_alias=False))
    if per_param:
        return treedef.unflatten(values)
    present = [v for v in values if v is not None]
    if not present:
        return template
    if name == "step" and len(present) < len(values) and np.asarray(present[0]) > 0:
        missing = [i for i, v in zip(indices, values) if v is None]
        warnings.warn(
            f"loaded state has no entry for parameters {missing} (they never had a gradient) "
            f"while others of their group have taken {int(np.asarray(present[0]))} steps; "
            "optim_jax keeps one step count per group, so these start with fresh moments but "
            "the group's count (torch would count their steps from 1)",
            RuntimeWarning,
            stacklevel=4,
        )
    if any(not np.array_equal(present[0], v) for v in present[1:]):
        raise ValueError(
            f"loaded '{name}' differs between parameters of one group; optim_jax keeps one "
            "value per group"
        )
    return present[0]


def check_entries(expected: set[str], indices: list[int], saved_state: Mapping[int, Any]) -> None:
    """Every saved entry of the group's parameters names only fields the state has."""
    for i in indices:
        entry = saved_state.get(i) or {}
        extra = {k for k, v in entry.items() if v is not None} - expected  # torch's None: absent
        if extra:
            raise ValueError(
                f"loaded state for parameter {i} has unexpected entries {sorted(extra)}; "
                f"expected {sorted(expected)}"
            )
