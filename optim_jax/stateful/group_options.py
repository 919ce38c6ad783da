"""A param group's options as the compiled step sees them: static parts and one number vector.

The group's options are the pure factory's arguments (``lr``, ``betas``, ...). What shapes the
program is static (booleans, sizes, a ``momentum`` of exactly 0 that drops the buffer); every
other number travels in one float vector argument, so ``param_groups[i]['lr'] = x`` takes effect
at the next step without compiling again. A *structure* records which is which; the step reads
each group's options back from the vector at its offset.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import fused, numerics, validation
from optim_jax.base import apply_updates
from optim_jax.packing import LARGE
from optim_jax.state_fields import collect_fields, replace_fields


class GroupOptions:
    """How one optimizer class's options become a transform, statically and in the vector.

    Args:
      factory: the pure transform factory whose arguments are the options.
      static_args: numeric options that shape the program (sizes, iteration counts).
      static_zeros: options whose value 0 removes work or state (momentum, weight decay).
      state_layout: wraps each built transform to lay its state out (ZeRO), or ``None``.
      init_overrides: option values a fresh state is built with whatever the group says
        (torch's Adagrad starts every ``sum`` at the constructor's value).
    """

    def __init__(
        self,
        factory: Callable[..., Any],
        static_args: tuple[str, ...],
        static_zeros: tuple[str, ...],
        state_layout: Callable[[Any], Any] | None = None,
        init_overrides: Mapping[str, Any] | None = None,
    ):
        self.factory, self.static_args, self.static_zeros = factory, static_args, static_zeros
        self.state_layout, self.init_overrides = state_layout, dict(init_overrides or {})
        parameters = inspect.signature(factory).parameters
        self.names = tuple(parameters)
        self.factory_defaults = {name: p.default for name, p in parameters.items()}

    def of(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The group's values of the factory's arguments."""
        return {name: group[name] for name in self.names if name in group}

    def shared_up_to(self, group: Mapping[str, Any], params: Any) -> int:
        """Leaves of up to this many elements share a contiguous group's buffers: more where
        a CPU kernel is expected to take its steps (:data:`optim_jax.fused.SHARED_UP_TO`; the
        kernel reads the gradients unconcatenated)."""
        if self.state_layout is None and fused.expected(self.factory, self.of(group), params):
            return fused.SHARED_UP_TO
        return LARGE

    def build(self, group: Mapping[str, Any]) -> Any:
        """The group's transform from its Python values, validating them (torch's messages)."""
        return self.factory(**self.of(group))

    def check_types(
        self, group: Mapping[str, Any], required: Mapping[str, Any], index: int | None = None
    ) -> None:
        """A ``KeyError`` for a missing option, a ``TypeError`` naming one of the wrong kind.

        An option whose default is a number takes a number, a 0-d or one-element array, or a
        schedule; one whose default is a tuple of numbers takes a tuple of as many. Options in
        ``required`` must be present. ``index`` names the group (``param_groups[0]['lr']``)
        when checking groups edited by hand.
        """

        def label(name: str) -> str:
            return name if index is None else f"param_groups[{index}][{name!r}]"

        for name in self.names:
            if name not in group:
                if name in required:
                    raise KeyError(f"{label(name)}: the group has no value for {name!r}")
                continue
            value, default = group[name], self.factory_defaults[name]
            if _is_number(default):
                _check_numeric(value, label(name))
            elif isinstance(default, tuple) and any(map(_is_number, default)):
                if not isinstance(value, (tuple, list)) or len(value) != len(default):
                    raise TypeError(
                        f"{label(name)} must be a tuple of {len(default)} numbers, got {value!r}"
                    )
                for i, (v, d) in enumerate(zip(value, default)):
                    if not (d is None and v is None):
                        _check_numeric(v, f"{label(name)}[{i}]")

    def structure(self, group: Mapping[str, Any]) -> tuple:
        """What of a group's options shapes the program: ``(statics, numeric layout)``."""
        statics, numeric = [], []
        for name, value in self.of(group).items():
            if name in self.static_args:
                statics.append((name, value))
            elif name in self.static_zeros and validation.is_numeric(value) and np.all(np.asarray(value) == 0):
                statics.append((name, 0.0))
            elif validation.is_numeric(value):
                numeric.append((name, len(value) if isinstance(value, (tuple, list)) else None))
            else:
                statics.append((name, value))
        return tuple(statics), tuple(numeric)

    def vector(self, groups: list[Mapping[str, Any]], structures: list[tuple]) -> jax.Array:
        """Every group's numeric options, in group order, as one array of the widest float."""
        values = [v for group, s in zip(groups, structures) for v in _numbers(group, s)]
        return jnp.asarray(values, numerics.scalar_dtype())

    def options_for(self, structure: tuple, vector: Any, offset: int) -> tuple[dict, int]:
        """The options of the group at ``offset`` of ``vector``, and the next group's offset."""
        statics, numeric = structure
        options = dict(statics)
        for name, size in numeric:
            if size is None:
                options[name], offset = vector[offset], offset + 1
            else:
                options[name], offset = tuple(vector[offset : offset + size]), offset + size
        return options, offset

    def transform_for(self, structure: tuple, vector: Any, offset: int) -> tuple[Any, int]:
        """The transform of the group at ``offset`` of ``vector``, and the next group's offset."""
        options, offset = self.options_for(structure, vector, offset)
        return self._transform(options), offset

    def _transform(self, options: dict) -> Any:
        tx = self.factory(**options)
        return tx if self.state_layout is None else self.state_layout(tx)

    def step(self, options: dict, one_device: bool, params: Any, grads: Any,
             state: Any, grad_parts: dict | None = None, after: Any = None) -> tuple[Any, Any]:
        """Traced: ``(new params, new state)`` of one step with the group's ``options``
        (:meth:`options_for`): the transform's update applied to ``params``, through a CPU
        kernel where one covers it (:func:`optim_jax.fused.fused_update`; arrays on one
        device, the state in the transform's own layout). ``grad_parts`` and ``after`` as
        that function takes them."""

        def xla_update():
            updates, new_state = self._transform(options).update(grads, state, params)
            return apply_updates(params, updates), new_state

        if not one_device or self.state_layout is not None:
            return xla_update()
        return fused.fused_update(self.factory, options, params, grads, state, xla_update,
                                  grad_parts, after)

    def init_state(self, group: Mapping[str, Any], structure: tuple, params: Any) -> Any:
        """A fresh state for ``params`` with the group's current options.

        They were checked when first given (or are taken as saved, or as a scheduler left them,
        as torch takes them), so they go to the factory :class:`~optim_jax.validation.Unchecked`.
        """
        dtype = numerics.scalar_dtype()
        group = {**group, **self.init_overrides}
        values = [validation.unchecked(v, dtype) for v in _numbers(group, structure)]
        tx, _ = self.transform_for(structure, values, 0)
        return tx.init(params)


    def migrated(
        self, state: Any, group: Mapping[str, Any], structure: tuple, params: Any, parked: dict
    ) -> tuple[Any, dict]:
        """``state`` (over ``params``, the tree or its buffers) for the group's new
        ``structure`` (a ``momentum`` now 0, say), and the fields set aside.

        The fresh state keeps the old state's fields of the same name. A field the new state
        lacks is set aside in ``parked`` and comes back when a later structure has it again, as
        torch keeps a momentum buffer in its state, unread and unwritten, while momentum is 0
        (and ``max_exp_avg_sq`` while ``amsgrad`` is off); a parked field that no longer fits
        the params is dropped.
        """
        treedef = jax.tree.structure(params)
        old = dict(collect_fields(state, treedef))
        fresh = self.init_state(group, structure, params)
        fresh_fields = collect_fields(fresh, treedef)
        names = {name for name, _ in fresh_fields}
        available = {**parked, **old}
        kept, seen = [], set()
        for name, value in fresh_fields:
            if name in available and validation.tree_difference(
                    available[name], value, dtypes=True) is None:
                value = available[name]
            if id(value) in seen:  # two blocks' ``step`` from one old field: a step donates both
                value = jax.tree.map(jnp.copy, value)
            seen.add(id(value))
            kept.append(value)
        set_aside = {name: value for name, value in available.items() if name not in names}
        return replace_fields(fresh, treedef, kept), set_aside

    def parkable(self, group: Mapping[str, Any], params: Any, current: set) -> dict[str, Any]:
        """The fields the group's state would have under other options (a momentum buffer
        when momentum is 0, ``max_exp_avg_sq`` without ``amsgrad``) and not among its
        ``current`` ones, each a fresh template over ``params``: what a saved state may hold
        beside the current fields."""
        treedef = jax.tree.structure(params)
        variants = [{name: 0.5} for name in self.static_zeros]
        variants += [{name: True} for name, value in self.of(group).items() if value is False]
        found: dict[str, Any] = {}
        for change in variants:
            other = {**group, **change}
            try:
                shapes = jax.eval_shape(lambda p: self.init_state(other, self.structure(other), p),
                                        params)
            except (ValueError, TypeError):  # a combination the factory refuses
                continue
            state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            for name, value in collect_fields(state, treedef):
                if name not in current:
                    found.setdefault(name, value)
        return found


def _numbers(group: Mapping[str, Any], structure: tuple) -> list:
    values = []
    for name, size in structure[1]:
        values.extend(group[name] if size is not None else [group[name]])
    return values


_PLAIN = frozenset({float, int, bool, str, type(None)})


def fingerprint(value: Any) -> Any:
    """A value that compares equal exactly when an option's value is unchanged (arrays by
    identity, as JAX arrays are immutable; NumPy's by content)."""
    if type(value) in _PLAIN:  # most options, every step: no instance checks
        return value
    if isinstance(value, jax.Array):
        return _Same(value)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(map(fingerprint, value))
    return value


class _Same:
    """Equal only to a wrapper of the very same object (which it keeps alive)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numeric(value: Any, name: str) -> None:
    """A number, a one-element real array, a tracer or a schedule; else a precise error."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.size(value) != 1:
        raise ValueError(
            f"Tensor {name} must be 1-element, got an array of shape {np.shape(value)}"
        )
    validation.check_type(value, f"Invalid {name}: {value!r}", schedule=True)
