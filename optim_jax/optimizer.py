"""The stateful, torch-style face: ``Optimizer`` and its param groups over the pure transforms.

Every ``step`` is one call of a compiled XLA executable that takes all groups' params, states
and hyperparameters (and, for ``step(closure)``, evaluates the loss and its gradient too).
Executables are cached by what changes the program: the algorithm's boolean options, the tree
structures, the closure's code and its non-array captures. Numeric hyperparameters travel as one
float vector argument, so ``param_groups[i]['lr'] = x`` takes effect without recompiling. The
exception is a hyperparameter whose zero switches work or state off: ``momentum`` (torch keeps no
momentum buffer at 0) and ``weight_decay`` (at 0 the step does not read the parameters into the
gradient, which saves a pass over them). Crossing zero compiles once more (both programs stay
cached), and the state gains or drops the momentum buffer as torch's would.

Hyperparameters reach the program as arrays of the widest enabled float: float32 unless
``jax_enable_x64`` is on. ``1 - beta`` then carries beta's float32 rounding (for beta2 = 0.999, a
relative 1e-5 in the second-moment weight), where torch and the pure transforms built with Python
floats use float64 host arithmetic; with x64 enabled the classes match those to float64 rounding.

Parameters and optimiser state are donated to each step: arrays taken from ``opt.params`` or
``opt.state`` before a step are deleted by it (using one raises ``RuntimeError: Array has been
deleted``); read them again after the step.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import functionalize, nnx_params, numerics, validation
from optim_jax.base import PyTree, apply_updates
from optim_jax.combine import label_leaves
from optim_jax.hyperparams import _is_numeric
from optim_jax.state_fields import collect_fields, replace_fields


class Labelled(tuple):
    """One parameter tree split into groups by labels: made by :func:`labelled`."""


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
    return Labelled((group_list, treedef, flat_labels, list(groups)))


def _is_group_list(params: Any) -> bool:
    return (
        isinstance(params, (list, tuple))
        and len(params) > 0
        and all(isinstance(g, dict) for g in params)
        and any("params" in g for g in params)
    )


_IGNORED_TORCH_OPTIONS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


class _Required:
    """Marks a hyperparameter with no default: the constructor must be given it."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class RemovableHandle:
    """Returned by the hook registrations; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: OrderedDict, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class StateView(Mapping):
    """torch's ``optimizer.state``: per-parameter dicts such as ``{'step', 'exp_avg', ...}``.

    Keyed by the parameter's index (its position in ``state_dict()['param_groups']``), or by the
    parameter array itself (``opt.state[opt.params['w']]``).
    """

    def __init__(self, optimizer: "Optimizer"):
        self._entries = optimizer._per_param_state()
        self._leaves = [leaf for tree in optimizer._group_params() for leaf in _leaves(tree)]

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


def _leaves(tree: PyTree) -> list:
    return jax.tree.leaves(tree)


class Optimizer:
    """Base of the torch-style optimisers (``SGD``, ``Adam``, ...).

    Subclasses set ``transform`` to a pure factory whose argument names are the group
    hyperparameters (``optim_jax.sgd`` for ``SGD``), and may list in ``static_zeros`` the
    hyperparameters whose value 0 removes a block of the chain (and its state or reads), in
    ``static_args`` numeric ones that shape the program (sizes, iteration counts), and set
    ``max_groups``.

    Args:
      params: a pytree (one group); a list of dicts, each with ``'params'`` (a pytree) and
        options overriding ``defaults`` (torch's per-parameter options); or :func:`labelled`.
      defaults: default hyperparameters of every group.
    """

    transform: Callable[..., Any] | None = None
    static_zeros: tuple[str, ...] = ()
    static_args: tuple[str, ...] = ()
    max_groups: int | None = None
    # Wraps each group's transform to lay its state out (ZeroRedundancyOptimizer sets it).
    _state_layout: Callable[[Any], Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Gives a subclass that sets ``transform`` torch's constructor, from its signature.

        ``Adam(params, lr=1e-3, betas=(0.9, 0.999), ...)`` takes exactly :func:`adam`'s
        arguments, in torch's order, plus torch's ``foreach``, ``fused``, ``capturable`` and
        ``differentiable``, which are accepted for drop-in compatibility and ignored: every step
        is one fused XLA program already.
        """
        super().__init_subclass__(**kwargs)
        if "transform" not in cls.__dict__ or "__init__" in cls.__dict__:
            return
        signature = inspect.signature(cls.transform)
        parameters = [
            inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *signature.parameters.values(),
            *(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
              for name, default in _IGNORED_TORCH_OPTIONS.items()),
        ]
        full = signature.replace(parameters=parameters, return_annotation=None)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            bound = full.bind(*args, **kwargs)
            bound.apply_defaults()
            options = dict(bound.arguments)
            Optimizer.__init__(self, options.pop("params"), options)

        __init__.__signature__ = full.replace(
            parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *parameters]
        )
        __init__.__doc__ = cls.__doc__
        cls.__init__ = __init__

    def __init__(self, params: Any, defaults: dict[str, Any]):
        if self.transform is None:
            raise TypeError(
                f"{type(self).__name__} sets no `transform`: subclass Optimizer with a pure "
                "transform factory, or use SGD, Adam, AdamW, ..."
            )
        self.defaults = dict(defaults)
        self._transform_args = tuple(inspect.signature(type(self).transform).parameters)
        self._build({k: v for k, v in self.defaults.items() if v is not required})
        self.param_groups: list[dict[str, Any]] = []
        self._states: list[Any] = []
        self._structures: list[Any] = []
        self._grad: list | None = None
        self._compiled: dict[Any, Callable] = {}
        self._step_pre_hooks: OrderedDict = OrderedDict()
        self._step_post_hooks: OrderedDict = OrderedDict()
        self._labels = None
        self._prepared = None
        self._modules: list = []  # per group: the nnx Module its params belong to, or None
        self._changed: dict = {}  # closure key -> which nnx variables it changes, see _write_back
        # id -> each JAX array given as a parameter: committing made the optimizer's own array
        # a new object, so these are how the user's arrays are recognised later. Kept alive so
        # an id is never reused; they share (or, after a donating step, lost) their buffers.
        self._given: dict = {}
        self._variables: list = []  # per group: that module's Param variables, in leaf order
        if isinstance(params, Labelled):
            groups, *self._labels = params
            self._layout = "labelled"
        elif _is_group_list(params):
            groups, self._layout = list(params), "groups"
        else:
            groups, self._layout = [{"params": params}], "tree"
        if not groups or not any(_leaves(g.get("params")) for g in groups):
            raise ValueError("optimizer got an empty parameter list")
        for group in groups:
            self._add_group(group)

    # -- groups and hyperparameters -------------------------------------------------------

    def _options(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {name: group[name] for name in self._transform_args if name in group}

    def _build(self, options: Mapping[str, Any]):
        """The group's pure transform from Python values, validating them (torch's messages)."""
        return type(self).transform(**self._options(options))

    def _structure(self, group: Mapping[str, Any]) -> tuple:
        """What of a group's options shapes the program: statics, numeric layout, zeros."""
        statics, numeric = [], []
        for name, value in self._options(group).items():
            if name in self.static_args:
                statics.append((name, value))
            elif name in self.static_zeros and _is_numeric(value) and np.all(np.asarray(value) == 0):
                statics.append((name, 0.0))
            elif _is_numeric(value):
                numeric.append((name, len(value) if isinstance(value, (tuple, list)) else None))
            else:
                statics.append((name, value))
        return tuple(statics), tuple(numeric)

    def _hyperparams(self, group: Mapping[str, Any], structure: tuple) -> list[float]:
        values = []
        for name, size in structure[1]:
            values.extend(group[name] if size is not None else [group[name]])
        return values

    def _options_for(self, structure: tuple, vector: jax.Array, offset: int):
        """A group's options with numeric values read from ``vector`` at ``offset``."""
        statics, numeric = structure
        options = dict(statics)
        for name, size in numeric:
            if size is None:
                options[name], offset = vector[offset], offset + 1
            else:
                options[name], offset = tuple(vector[offset : offset + size]), offset + size
        return options, offset

    def _transform_for(self, structure: tuple, vector: jax.Array, offset: int):
        options, offset = self._options_for(structure, vector, offset)
        tx = type(self).transform(**options)
        return (tx if self._state_layout is None else self._state_layout(tx)), offset

    def _init_state(self, group: Mapping[str, Any], structure: tuple):
        vector = jnp.asarray(self._hyperparams(group, structure), numerics.scalar_dtype())
        with validation.suspended():  # values were checked when the group was added, if ever
            tx, _ = self._transform_for(structure, vector, 0)
        return _committed(tx.init(group["params"]))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds ``param_group`` (``'params'`` and options overriding ``defaults``), as torch does.

        Its state starts empty.
        """
        if self._layout == "labelled":
            raise ValueError(
                "add_param_group is not available when params are labelled(); build the "
                "optimizer with all groups in labelled(..., groups={...})"
            )
        if self._layout == "tree":
            self._layout = "groups"
        self._add_group(param_group)

    def _add_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if self.max_groups is not None and len(self.param_groups) >= self.max_groups:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )
        if "params" not in param_group:
            raise ValueError(
                f"param group must have a 'params' key; got keys {sorted(param_group)}"
            )
        group = dict(param_group)
        module = group["params"] if nnx_params.is_module(group["params"]) else None
        if module is not None:
            if self._layout == "labelled":
                raise ValueError(
                    "labelled() takes a params pytree, not an nnx Module: pass submodules as "
                    "groups, [{'params': model.base}, {'params': model.head, 'lr': 1e-3}]"
                )
            group["params"] = nnx_params.params_of(module)
            variables = nnx_params.variables_of(group["params"])  # before the tree is copied
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            group.setdefault(name, default)
        given = _leaves(group["params"])
        current = {id(leaf) for g in self.param_groups for leaf in _leaves(g["params"])}
        if any(id(leaf) in self._given or id(leaf) in current for leaf in given):
            raise ValueError("some parameters appear in more than one parameter group")
        self._build(group)
        group["params"] = _committed(group["params"])
        if module is not None:  # the module holds the very arrays the optimizer steps
            nnx_params.set_values(variables, group["params"])
        structure = self._structure(group)
        state = self._init_state(group, structure)
        self.param_groups.append(group)
        self._states.append(state)
        self._structures.append(structure)
        self._modules.append(module)
        self._given.update((id(leaf), leaf) for leaf in given if isinstance(leaf, jax.Array))
        self._variables.append(None if module is None else variables)
        if self._grad is not None:
            self._grad.append(None)

    # -- parameters and gradients in the user's layout ------------------------------------

    def _group_params(self) -> list:
        return [g["params"] for g in self.param_groups]

    def _assemble(self, trees: list) -> PyTree:
        if self._layout == "tree":
            return trees[0]
        if self._layout == "groups":
            return list(trees)
        treedef, flat_labels, order = self._labels
        flat = [treedef.flatten_up_to(t) for t in trees]
        return treedef.unflatten(
            [flat[order.index(lab)][i] for i, lab in enumerate(flat_labels)]
        )

    def _disassemble(self, tree: PyTree, what: str) -> list:
        """The user's layout split into group trees, checking the structure matches params."""
        if self._layout == "groups":
            if not isinstance(tree, (list, tuple)) or len(tree) != len(self.param_groups):
                raise ValueError(
                    f"{what} must be a list of {len(self.param_groups)} group trees like "
                    f"opt.params, got {type(tree).__name__}"
                )
            trees = list(tree)
        elif self._layout == "tree":
            trees = [tree]
        else:
            treedef, flat_labels, order = self._labels
            leaves = self._checked_leaves(tree, treedef, what)
            trees = [
                treedef.unflatten([x if lab == label else None for x, lab in zip(leaves, flat_labels)])
                for label in order
            ]
        for index, (t, params) in enumerate(zip(trees, self._group_params())):
            where = f"{what} of group {index}" if self._layout == "groups" else what
            self._checked_leaves(t, jax.tree.structure(params), where)
        return trees

    @staticmethod
    def _checked_leaves(tree: PyTree, treedef: Any, what: str) -> list:
        try:
            return treedef.flatten_up_to(tree)
        except (ValueError, TypeError):
            raise ValueError(
                f"{what} has structure {jax.tree.structure(tree)}, but the params have "
                f"{treedef}"
            ) from None

    @property
    def params(self) -> PyTree:
        """The current parameters in the layout given to the constructor.

        Groups given as nnx Modules appear as those modules (holding the current values).
        """
        return self._assemble(
            [g["params"] if m is None else m for g, m in zip(self.param_groups, self._modules)]
        )

    @property
    def grad(self) -> PyTree | None:
        """The accumulated gradient (``None`` after ``zero_grad``), in the params' layout."""
        if self._grad is None or any(g is None for g in self._grad):
            return None
        return self._assemble(self._grad)

    @grad.setter
    def grad(self, value: PyTree | None) -> None:
        self._grad = None if value is None else [
            _committed(t) for t in self._disassemble(value, "grad")
        ]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the gradient: ``None`` when ``set_to_none`` (torch's default), else zeros."""
        if set_to_none:
            self._grad = None
        else:
            self._grad = [_committed(jax.tree.map(jnp.zeros_like, p)) for p in self._group_params()]

    # -- compiled programs ----------------------------------------------------------------

    def _prepare(self) -> tuple[tuple, jax.Array]:
        """Current structures (migrating state whose structure changed) and the hp vector.

        Both are cached against the groups' option values, so an unchanged step costs one
        comparison here instead of a rebuild and a host-to-device copy.
        """
        options = [
            [tuple(v) if isinstance(v, list) else v for v in map(group.get, self._transform_args)]
            for group in self.param_groups
        ]
        if self._prepared is not None and self._prepared[0] == options:
            return self._prepared[1]
        structures, values = [], []
        for index, group in enumerate(self.param_groups):
            structure = self._structure(group)
            if structure != self._structures[index]:
                self._states[index] = self._migrate(index, group, structure)
                self._structures[index] = structure
            structures.append(structure)
            values.extend(self._hyperparams(group, structure))
        prepared = tuple(structures), jnp.asarray(values, numerics.scalar_dtype())
        self._prepared = options, prepared
        return prepared

    def _migrate(self, index: int, group: dict, structure: tuple):
        """A state for a new structure keeping the old state's fields of the same name."""
        treedef = jax.tree.structure(group["params"])
        old = dict(collect_fields(self._states[index], treedef))
        fresh = self._init_state(group, structure)
        kept = [old.get(name, value) for name, value in collect_fields(fresh, treedef)]
        return replace_fields(fresh, treedef, kept)

    def _update_groups(self, structures, vector, group_params, group_grads, states):
        """Traced: every group's update, with shape checks that run once per compilation."""
        offset, new_params, new_states = 0, [], []
        for index, (structure, params, grads, state) in enumerate(
            zip(structures, group_params, group_grads, states)
        ):
            for path, p, g in _paired_leaves(params, grads):
                if jnp.shape(p) != jnp.shape(g):
                    raise ValueError(
                        f"gradient of group {index} at {jax.tree_util.keystr(path)} has shape "
                        f"{jnp.shape(g)}, the parameter has {jnp.shape(p)}"
                    )
            tx, offset = self._transform_for(structure, vector, offset)
            updates, state = tx.update(grads, state, params)
            new_params.append(apply_updates(params, updates))
            new_states.append(state)
        return new_params, new_states

    def _compile(self, key: Any, fn: Callable, donate: tuple[int, ...]) -> Callable:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = jax.jit(fn, donate_argnums=donate)
        return compiled

    def _split_closure(self, closure: Callable, args: tuple, kwargs: dict):
        """``(key, arrays, objective, modules)`` for ``closure(params, *args, **kwargs)``.

        ``objective(trees, arrays) -> (loss, changed)`` evaluates the closure at the group
        trees ``trees``. With nnx Modules the modules themselves go through
        :func:`functionalize.split_call`, like any captured value: their ``Param`` arrays, and
        those of a module the closure captures (the model around submodule groups), are
        recognised by identity and read from ``trees`` instead, so the gradient reaches them.
        ``changed`` holds the new values of the other variables (batch statistics, RNG
        counters) the closure changed in the nnx Modules it reaches, ``modules``; which ones
        they are is found while tracing (a changed variable no longer holds its input) and kept
        in ``self._changed[key]`` for :meth:`_write_back`.
        """
        as_modules = any(m is not None for m in self._modules)
        if as_modules:
            self._adopt_module_values()
            args = (self.params, *args)  # passed like any argument, so its arrays are known
        modules: list = []
        key, arrays, rebuild = functionalize.split_call(closure, args, kwargs, modules)
        aliases = ()
        if modules:
            where = {id(leaf): (g, i) for g, tree in enumerate(self._group_params())
                     for i, leaf in enumerate(_leaves(tree))}
            aliases = tuple((n, where[id(a)]) for n, a in enumerate(arrays) if id(a) in where)
            for n, _ in aliases:
                arrays[n] = None  # donated as params: the same buffer cannot be passed twice
        key = (key, aliases)

        def objective(trees, arrays):
            flat, arrays = [_leaves(t) for t in trees], list(arrays)
            for n, (g, i) in aliases:
                arrays[n] = flat[g][i]
            with functionalize.rebuilt_modules() as copies:
                fn, fn_args, fn_kwargs = rebuild(arrays)
            if not as_modules:
                fn_args = (self._assemble(trees), *fn_args)
            value = _scalar(fn(*fn_args, **fn_kwargs))
            inputs = {id(a) for a in arrays}
            where, changed = [], []
            for m, copy in enumerate(copies):
                for i, leaf in enumerate(jax.tree.leaves(nnx_params.others_of(copy))):
                    if isinstance(leaf, jax.Array) and id(leaf) not in inputs:
                        where.append((m, i))
                        changed.append(leaf)
            self._changed[key] = where
            return value, changed

        return key, arrays, objective, modules

    def _loss_and_grad(self, objective, group_params, arrays):
        """``((loss, others), grads)`` of ``objective`` at ``group_params``."""
        return jax.value_and_grad(objective, has_aux=True)(group_params, arrays)

    def _adopt_module_values(self) -> None:
        """Takes up values put into the groups' nnx Modules since the last step.

        ``nnx.update(model, checkpoint)`` or ``model.layer.kernel[...] = w`` between steps
        replaces the arrays the optimizer holds; the next step starts from the module's values,
        as torch's does from its tensors.
        """
        for group, variables in zip(self.param_groups, self._variables):
            if variables is None:
                continue
            values = [variable.get_value() for variable in variables]
            if any(a is not b for a, b in zip(values, _leaves(group["params"]))):
                group["params"] = _committed(
                    jax.tree.structure(group["params"]).unflatten(values)
                )
                nnx_params.set_values(variables, group["params"])

    def _write_back(self, key: Any, modules: list, changed: list) -> None:
        """New param values into the groups' nnx Modules, and the closure's other changes."""
        for group, variables in zip(self.param_groups, self._variables):
            if variables is not None:
                nnx_params.set_values(variables, group["params"])
        if changed:
            others = [nnx_params.variables_of(nnx_params.others_of(m)) for m in modules]
            for (m, i), value in zip(self._changed[key], changed):
                others[m][i].set_value(value)

    # -- the torch API ----------------------------------------------------------------------

    def backward(self, loss_fn: Callable, *args: Any, **kwargs: Any) -> jax.Array:
        """Evaluates ``loss_fn(params, *args, **kwargs)`` and adds its gradient into ``grad``.

        With nnx Modules as params, ``loss_fn`` receives the module(s) as ``params`` do.

        One compiled call; like torch's ``loss.backward()``, gradients accumulate across calls
        until ``zero_grad()``. Returns the loss.
        """
        key, arrays, objective, modules = self._split_closure(loss_fn, args, kwargs)
        accumulate = self._grad is not None and all(g is not None for g in self._grad)

        def run(group_params, grad, arrays):
            (value, others), grads = self._loss_and_grad(objective, group_params, arrays)
            if accumulate:
                grads = jax.tree.map(jnp.add, grad, grads)
            return value, others, grads

        compiled = self._compile(("backward", key, accumulate), run, (1,) if accumulate else ())
        value, others, self._grad = compiled(
            self._group_params(), self._grad if accumulate else None, arrays
        )
        self._write_back(key, modules, others)
        return value

    def step(self, closure: Callable | None = None, *args: Any, **kwargs: Any) -> jax.Array | None:
        """Takes one optimisation step, from ``grad`` or from a ``closure``.

        ``step()`` applies the update for ``grad``. ``step(closure, *args, **kwargs)``
        differentiates ``closure(params, *args, **kwargs)`` (a scalar loss) and applies the
        update in the same compiled call; ``grad`` is then ``None``. Returns the loss (or
        ``None`` without a closure).
        """
        for hook in list(self._step_pre_hooks.values()):
            result = hook(self, (closure, *args), kwargs)
            if result is not None:
                (closure, *args), kwargs = result
        loss = self._step(closure, args, kwargs)
        for hook in list(self._step_post_hooks.values()):
            hook(self, (closure, *args), kwargs)
        return loss

    def _step(self, closure, args, kwargs):
        structures, vector = self._prepare()
        if closure is None:
            self._adopt_module_values()
            if self.grad is None:
                raise RuntimeError(
                    "step() needs a gradient: call opt.backward(loss_fn, ...) or assign "
                    "opt.grad first, or pass a closure: opt.step(closure)"
                )

            def apply(group_params, states, vector, grads):
                return self._update_groups(structures, vector, group_params, grads, states)

            compiled = self._compile(("apply", structures), apply, (0, 1))
            new_params, self._states = compiled(
                self._group_params(), self._states, vector, self._grad
            )
            loss, key, modules, others = None, None, [], []
        else:
            key, arrays, objective, modules = self._split_closure(closure, args, kwargs)

            def fused(group_params, states, vector, arrays):
                (value, others), grads = self._loss_and_grad(objective, group_params, arrays)
                params, states = self._update_groups(
                    structures, vector, group_params, grads, states
                )
                return value, others, params, states

            compiled = self._compile(("closure", structures, key), fused, (0, 1))
            loss, others, new_params, self._states = compiled(
                self._group_params(), self._states, vector, arrays
            )
            self._grad = None
        for group, params in zip(self.param_groups, new_params):
            group["params"] = params
        self._write_back(key, modules, others)
        return loss

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Registers ``hook``, called as ``hook(optimizer, args, kwargs)`` before each step.

        The hook may return new ``(args, kwargs)``. Returns a handle whose ``remove()``
        unregisters it.
        """
        key = id(hook) ^ len(self._step_pre_hooks)
        self._step_pre_hooks[key] = hook
        return RemovableHandle(self._step_pre_hooks, key)

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """Registers ``hook``, called as ``hook(optimizer, args, kwargs)`` after each step.

        Returns a handle whose ``remove()`` unregisters it.
        """
        key = id(hook) ^ len(self._step_post_hooks)
        self._step_post_hooks[key] = hook
        return RemovableHandle(self._step_post_hooks, key)

    # -- state ----------------------------------------------------------------------------

    def _per_param_state(self) -> dict[int, dict[str, jax.Array]]:
        entries, index = {}, 0
        for params, state in zip(self._group_params(), self._states):
            treedef = jax.tree.structure(params)
            fields = collect_fields(state, treedef)
            for i in range(treedef.num_leaves):
                entry = {name: _field_leaf(value, treedef, i) for name, value in fields}
                entry = {name: value for name, value in entry.items() if value is not None}
                if entry:
                    entries[index + i] = entry
            index += treedef.num_leaves
        return entries

    @property
    def state(self) -> StateView:
        """Per-parameter state with torch's names, e.g. ``opt.state[0]['exp_avg']``."""
        return StateView(self)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [...]}]}``.

        Arrays are copies: the dict stays valid after later (donating) steps.
        """
        state = {
            index: {name: jnp.array(value, copy=True) for name, value in entry.items()}
            for index, entry in self._per_param_state().items()
        }
        groups, index = [], 0
        for group in self.param_groups:
            n = len(_leaves(group["params"]))
            groups.append(
                {**{k: v for k, v in group.items() if k != "params"},
                 "params": list(range(index, index + n))}
            )
            index += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores ``state_dict``, an output of ``state_dict()``; validates before changing.

        Hyperparameter values are taken as saved, as torch takes them (a scheduler may have
        left an lr a rounding below zero); counts, names, shapes and dtypes are checked.

        Raises:
          ValueError: naming what differs (group count, parameter count, state names, shapes,
            dtypes); the optimizer is then left as it was.
        """
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
        saved_groups = _listed(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer "
                f"has {len(self.param_groups)}"
            )
        saved_state = {int(k): v for k, v in dict(state_dict["state"]).items()}
        groups, states, structures = [], [], []
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            indices = [int(i) for i in _listed(saved.get("params", []))]
            treedef = jax.tree.structure(group["params"])
            if len(indices) != treedef.num_leaves:
                raise ValueError(
                    f"loaded state dict's group {g} has {len(indices)} parameters, the "
                    f"optimizer's group {g} has {treedef.num_leaves}"
                )
            new_group = {**group, **_restore_options(saved, group)}
            structure = self._structure(new_group)
            template = self._init_state(new_group, structure)
            values = [
                _gather_field(name, value, treedef, indices, saved_state)
                for name, value in collect_fields(template, treedef)
            ]
            expected = {name for name, _ in collect_fields(template, treedef)}
            for i in indices:
                extra = set(saved_state.get(i, {})) - expected
                if extra:
                    raise ValueError(
                        f"loaded state for parameter {i} has unexpected entries {sorted(extra)}; "
                        f"expected {sorted(expected)}"
                    )
            groups.append(new_group)
            states.append(_committed(replace_fields(template, treedef, values)))
            structures.append(structure)
        self.param_groups, self._states, self._structures = groups, states, structures

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines + [")"])


def _committed(tree: PyTree) -> PyTree:
    """``tree`` as JAX arrays committed to their devices.

    Every step returns committed arrays; jit compiles separately for uncommitted inputs (fresh
    ``jnp.zeros``, loaded values), so without this the first step would compile twice.
    Committing an array in place copies nothing.
    """

    def commit(x: Any) -> Any:
        x = jnp.asarray(x)
        return x if x.committed else jax.device_put(x, x.sharding)

    return jax.tree.map(commit, tree)


def _scalar(value: Any) -> Any:
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"the closure must return a scalar loss, got an array of shape {jnp.shape(value)}"
        )
    return value


def _paired_leaves(params, grads):
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    grads_flat = jax.tree.structure(params).flatten_up_to(grads)
    return [(path, p, g) for (path, p), g in zip(flat, grads_flat)]


def _field_leaf(value, treedef, i):
    """Parameter ``i``'s entry of a state field, or ``None`` if it has none.

    A field with the params' tree structure gives each parameter its leaf, whatever its shape
    (L-BFGS's history leaves add a leading axis); a scalar (``step``) is repeated for every
    parameter, as torch keeps one per parameter; any other array (L-BFGS's ``ro``) belongs to
    the group's first parameter, as in torch.
    """
    if jax.tree.structure(value) == treedef:
        return jax.tree.leaves(value)[i]
    return value if np.ndim(value) == 0 or i == 0 else None


def _listed(value) -> list:
    """A list saved by msgpack may come back as a dict keyed '0', '1', ..."""
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value, key=int)]
    return list(value)


def _restore_options(saved: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    options = {}
    for name, value in saved.items():
        if name == "params":
            continue
        current = group.get(name)
        if isinstance(current, tuple) and not isinstance(value, tuple):
            value = tuple(_listed(value))
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        options[name] = value
    return options


def _gather_field(name, template, treedef, indices, saved_state):
    """A state field rebuilt from the saved per-parameter entries, checked against template."""
    per_param = jax.tree.structure(template) == treedef
    if not per_param and np.ndim(template) > 0:
        indices = indices[:1]  # kept under the group's first parameter
    leaves = jax.tree.leaves(template) if per_param else [template] * len(indices)
    values = []
    for i, expected in zip(indices, leaves):
        entry = saved_state.get(i, {})
        if name not in entry:
            raise ValueError(f"loaded state for parameter {i} has no '{name}'")
        value = jnp.asarray(entry[name])
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
        values.append(jax.device_put(value, expected.sharding))  # where init put it, ZeRO too
    if per_param:
        return treedef.unflatten(values)
    if any(not np.array_equal(values[0], v) for v in values[1:]):
        raise ValueError(
            f"loaded '{name}' differs between parameters of one group; optim_jax keeps one "
            "value per group"
        )
    return values[0]
