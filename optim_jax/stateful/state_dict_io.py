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
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax.state_fields import collect_fields, replace_fields
from optim_jax.stateful.groups import committed
from optim_jax.stateful.param_group import ParamGroup
from optim_jax.stateful.storage import stored_fields, stored_state


def renewed(old: dict, new: dict) -> dict:
    """The group loaded in ``old``'s place keeps its params as ``old`` held them."""
    return old.renewed(new) if isinstance(old, ParamGroup) and old.is_current() else new


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
            entry = {}
            for name, value in fields:  # the first field of a name, see collect_fields
                leaf = field_leaf(value, treedef, i)
                if leaf is not None:
                    entry.setdefault(name, leaf)
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


class StateView(Mapping):
    """torch's ``optimizer.state``: per-parameter dicts such as ``{'step', 'exp_avg', ...}``.

    Keyed by the parameter's index (its position in ``state_dict()['param_groups']``), or by the
    parameter array itself (``opt.state[opt.params['w']]``).
    """

    def __init__(self, trees: list, states: list):
        self._entries = per_param_entries(trees, states)
        self._leaves = [leaf for tree in trees for leaf in jax.tree.leaves(tree)]

    def __getitem__(self, key: Any) -> dict:
        if not isinstance(key, (int, np.integer)):
            for index, leaf in enumerate(self._leaves):
                if leaf is key:
                    return self._entries[index]
            raise KeyError("this array is not one of the optimizer's current parameters")
        return self._entries[int(key)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def build(trees: list, states: list, param_groups: list[dict]) -> dict[str, Any]:
    """torch's ``state_dict`` of the groups: per-parameter state (copies) and the groups'
    options with parameter indices."""
    state = {
        index: {name: jnp.array(value, copy=True) for name, value in entry.items()}
        for index, entry in per_param_entries(trees, states).items()
    }
    groups, index = [], 0
    for tree, group in zip(trees, param_groups):
        n = len(jax.tree.leaves(tree))
        options = {k: list(v) if isinstance(v, list) else v for k, v in group.items() if k != "params"}
        groups.append({**options, "params": list(range(index, index + n))})
        index += n
    return {"state": state, "param_groups": groups}


def load(
    state_dict: Mapping[str, Any], param_groups: list[dict], options: Any, defaults: Mapping
) -> tuple[list[dict], list, list]:
    """The groups, states and option structures ``state_dict`` restores, checked against the
    current ``param_groups`` (counts, names, shapes, dtypes, option kinds) before anything is
    returned; ``options`` is the optimizer's ``GroupOptions``."""
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
    saved_groups = listed(state_dict["param_groups"])
    if len(saved_groups) != len(param_groups):
        raise ValueError(
            f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer "
            f"has {len(param_groups)}"
        )
    saved_state = {int(k): v for k, v in dict(state_dict["state"]).items()}
    groups, states, structures, parked = [], [], [], []
    for g, (group, saved) in enumerate(zip(param_groups, saved_groups)):
        indices = [int(i) for i in listed(saved.get("params", []))]
        treedef = jax.tree.structure(group["params"])
        if len(indices) != treedef.num_leaves:
            raise ValueError(
                f"loaded state dict's group {g} has {len(indices)} parameters, the "
                f"optimizer's group {g} has {treedef.num_leaves}"
            )
        new_group = {**group, **restore_options(saved, group)}
        options.check_types(new_group, required=defaults, index=g)
        structure = options.structure(new_group)
        template = options.init_state(new_group, structure, group["params"])
        fields = collect_fields(template, treedef)
        names = {name for name, _ in fields}
        # Saved fields the current options do not use (torch's momentum buffer while momentum
        # is 0) are set aside, as torch keeps them.
        unused = {name: value
                  for name, value in options.parkable(new_group, group["params"], names).items()
                  if any(name in (saved_state.get(i) or {}) for i in indices)}
        check_entries(names | set(unused), indices, saved_state)
        values = [gather_field(name, value, treedef, indices, saved_state) for name, value in fields]
        groups.append(new_group)
        states.append(replace_fields(template, treedef, values))
        structures.append(structure)
        parked.append({name: gather_field(name, value, treedef, indices, saved_state)
                       for name, value in unused.items()})
    return groups, states, structures, parked


class Checkpointing:
    """The optimizer's ``state``, ``state_dict``/``load_state_dict`` and copies (``deepcopy``,
    ``pickle``), over the optimizer's groups and records."""

    _rebuilt: tuple[str, ...] = ()  # attributes a copy rebuilds (see ``_reset_caches``)


    @property
    def state(self) -> StateView:
        """Per-parameter state with torch's names, e.g. ``opt.state[0]['exp_avg']``."""
        return StateView(self._group_params(), self._leaf_states())

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [...]}]}``.

        Arrays are copies: the dict stays valid after later (donating) steps. Each group lists
        ``param_names``: the names given as ``(name, array)`` pairs, or the leaves' key paths.
        Unlike torch's, it lists every parameter's state from the start (fresh before the first
        step), so a new optimizer's dict is a restore target for a checkpoint (orbax).
        """
        self._run_hooks("state_dict_pre", self)
        self._adopt_appended_groups()
        result = build(self._group_params(), self._leaf_states(), self.param_groups)
        return self._run_hooks("state_dict_post", self, result) or result

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores ``state_dict``, from ``state_dict()`` or from torch; validates before changing.

        Hyperparameter values are taken as saved, as torch takes them (a scheduler may have
        left an lr a rounding below zero); counts, names, shapes and dtypes are checked. Every
        array kept is a copy: ``state_dict`` stays valid after later steps. A torch checkpoint
        (tensors as arrays) loads as torch would load it, see
        :mod:`optim_jax.stateful.state_dict_io`.

        Raises:
          ValueError: naming what differs (group count, parameter count, state names, shapes,
            dtypes); the optimizer is then left as it was. ``TypeError`` for an option of the
            wrong kind.
        """
        state_dict = self._run_hooks("load_state_dict_pre", self, state_dict) or state_dict
        self._adopt_appended_groups()
        groups, states, structures, parked = load(
            state_dict, self.param_groups, self._options, self.defaults
        )
        self.param_groups = [renewed(old, new) for old, new in zip(self.param_groups, groups)]
        for record, state, structure, unused in zip(self._records, states, structures, parked):
            record.state, record.structure = committed(stored_state(record, state)), structure
            record.parked = committed(stored_fields(record, unused))
        self._run_hooks("load_state_dict_post", self)

    # -- copies -----------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy.deepcopy`` and ``pickle`` keep: params, state, groups, options, the
        gradient and the nnx Modules. Compiled programs, hooks and caches are rebuilt (torch
        drops hooks the same way)."""
        return {k: v for k, v in self.__dict__.items() if k not in self._rebuilt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()
        self._commit([committed(t) for t in self._held()],
                     [committed(s) for s in self._states()], [], {})
        if self._grad is not None:
            self._grad = [None if g is None else committed(g) for g in self._grad]

