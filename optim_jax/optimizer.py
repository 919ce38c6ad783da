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
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import functionalize, hooks, nnx_params, numerics, state_dict_io, validation
from optim_jax.base import PyTree, apply_updates
from optim_jax.combine import label_leaves
from optim_jax.compile_cache import CompileCache
from optim_jax.hyperparams import _is_numeric
from optim_jax.state_fields import collect_fields, replace_fields
from optim_jax.ties import Ties


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

    def __reduce__(self) -> str:
        return "required"  # pickled by name: a copy stays the one sentinel


required = _Required()


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
        given = {k: v for k, v in self.defaults.items() if v is not required}
        self._check_option_types(given, missing_ok=True)
        self._build(given)
        self.param_groups: list[dict[str, Any]] = []
        self._states: list[Any] = []
        self._structures: list[Any] = []
        self._grad: list | None = None
        self._compiled = CompileCache()
        self._hooks = _fresh_hooks()
        self._labels = None
        self._prepared = None
        self._modules: list = []  # per group: the nnx Module its params belong to, or None
        self._changed: dict = {}  # closure key -> which nnx variables it changes, see _write_back
        # id -> each JAX array given as a parameter: committing made the optimizer's own array
        # a new object, so these are how the user's arrays are recognised later. Kept alive so
        # an id is never reused; they share (or, after a donating step, lost) their buffers.
        self._given: dict = {}
        self._variables: list = []  # per group: that module's Param variables, in leaf order
        self._ties: list = []  # per group: Ties when its tree repeats an array, else None
        self._named: list = []  # per group: whether it was given as (name, array) pairs
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
        self._check_group_count()

    def _check_group_count(self) -> None:
        if self.max_groups is not None and len(self.param_groups) > self.max_groups:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )

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
        if self.max_groups is not None and len(self.param_groups) >= self.max_groups:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )
        self._add_group(param_group)
        if self._layout == "tree":
            self._layout = "groups"

    def _add_group(self, param_group: dict[str, Any]) -> None:
        """Validates and adds one group, in torch's order of checks; nothing changes on error."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
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
        named = _split_names(group)
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            group.setdefault(name, default)
        _check_params(group["params"])
        ties = Ties.find(group["params"])
        if ties is not None and isinstance(param_group["params"], (list, tuple)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, "
                "this will cause an error; see github.com/pytorch/pytorch/issues/40967 for "
                "more information",
                stacklevel=4,
            )
        if any(n != named for n in self._named):
            raise ValueError(
                "all optimizer param groups should be with/without names. cannot add param "
                f"group {'with' if named else 'without'} names to the optimizer"
            )
        given = _leaves(group["params"])
        current = {id(leaf) for g in self.param_groups for leaf in _leaves(g["params"])}
        if any(id(leaf) in self._given or id(leaf) in current for leaf in given):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_option_types(group)
        self._build(group)
        if ties is not None:
            group["params"] = ties.collapse(group["params"])
        if not named:
            group["param_names"] = _path_names(group["params"])
        # The optimizer's own copy: the caller's arrays stay valid (steps donate only this one).
        group["params"] = _committed(group["params"], copy=True)
        if module is not None:  # the module holds the very arrays the optimizer steps
            nnx_params.set_values(variables, group["params"])
        structure = self._structure(group)
        state = self._init_state(group, structure)
        self.param_groups.append(group)
        self._states.append(state)
        self._structures.append(structure)
        self._modules.append(module)
        self._ties.append(ties)
        self._named.append(named)
        self._given.update((id(leaf), leaf) for leaf in given if isinstance(leaf, jax.Array))
        self._variables.append(None if module is None else variables)
        if self._grad is not None:
            self._grad.append(None)

    def _check_option_types(
        self, group: Mapping[str, Any], index: int | None = None, missing_ok: bool = False
    ) -> None:
        """A ``TypeError`` naming the option for a value of the wrong kind.

        An option whose default is a number takes a number, a 0-d or one-element array, or a
        schedule; one whose default is a tuple of numbers takes a tuple of as many. ``index``
        names the group (``param_groups[0]['lr']``) when checking groups edited by hand.
        """

        def label(name: str) -> str:
            return name if index is None else f"param_groups[{index}][{name!r}]"

        defaults = inspect.signature(type(self).transform).parameters
        for name in self._transform_args:
            if name not in group:
                if name in self.defaults and not missing_ok:
                    raise KeyError(f"{label(name)}: the group has no value for {name!r}")
                continue
            value, default = group[name], defaults[name].default
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

    # -- parameters and gradients in the user's layout ------------------------------------
    # Internally a group is its tree with repeated arrays collapsed (see ``Ties``) and names
    # split off; the user sees it expanded and, if given so, as (name, array) pairs.

    def _group_params(self) -> list:
        return [g["params"] for g in self.param_groups]

    def _shown(self, index: int, tree: PyTree) -> PyTree:
        """Group ``index``'s internal ``tree`` in the layout the user gave it."""
        ties = self._ties[index]
        if ties is not None:
            tree = ties.expand(tree)
        if self._named[index]:
            tree = list(zip(self.param_groups[index]["param_names"], tree))
        return tree

    def _assemble(self, trees: list) -> PyTree:
        trees = [self._shown(i, t) for i, t in enumerate(trees)]
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
        """The user's layout as each group's internal leaves (``None`` where ``tree`` has
        ``None`` at a leaf, a parameter torch would skip), checking the structure."""
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
        groups = []
        for index, (t, params) in enumerate(zip(trees, self._group_params())):
            where = f"{what} of group {index}" if self._layout == "groups" else what
            if self._named[index]:
                t = _without_names(t, self.param_groups[index]["param_names"], where)
            ties = self._ties[index]
            if ties is not None:
                self._checked_leaves(t, ties.treedef, where)
                t = ties.collapse_sum(t)
            groups.append(self._checked_leaves(t, jax.tree.structure(params), where))
        return groups

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
        """The accumulated gradient in the params' layout (``None`` after ``zero_grad``).

        A parameter that has no gradient shows ``None`` (torch's ``p.grad is None``); assigning
        ``None`` there makes ``step()`` skip that parameter, as torch does.
        """
        if self._grad is None:
            return None
        trees = [
            jax.tree.structure(p).unflatten(g if g is not None else [None] * len(_leaves(p)))
            for p, g in zip(self._group_params(), self._grad)
        ]
        return self._assemble(trees)

    @grad.setter
    def grad(self, value: PyTree | None) -> None:
        if value is None:
            self._grad = None
            return
        groups = self._disassemble(value, "grad")
        flat = [g for leaves in groups for g in leaves if g is not None]
        committed = iter(_committed(flat))
        self._grad = [
            None if all(g is None for g in leaves)
            else [None if g is None else next(committed) for g in leaves]
            for leaves in groups
        ]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the gradient: ``None`` when ``set_to_none`` (torch's default), else zeros."""
        if set_to_none:
            self._grad = None
        else:
            self._grad = [
                _committed([jnp.zeros_like(p) for p in _leaves(tree)])
                for tree in self._group_params()
            ]

    # -- compiled programs ----------------------------------------------------------------

    def _prepare(self) -> tuple[tuple, jax.Array]:
        """Current structures (migrating state whose structure changed) and the hp vector.

        Both are cached against the groups' option values, so an unchanged step costs one
        comparison here instead of a rebuild and a host-to-device copy. Groups edited by hand
        are checked first (a missing option is a ``KeyError``, a value of the wrong kind a
        ``TypeError``, as torch's step would raise), before anything changes.
        """
        self._adopt_appended_groups()
        options = [
            [_fingerprint(v) for v in map(group.get, self._transform_args)]
            for group in self.param_groups
        ]
        if self._prepared is not None and self._prepared[0] == options:
            return self._prepared[1]
        for index, group in enumerate(self.param_groups):
            self._check_option_types(group, index)
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

    def _adopt_appended_groups(self) -> None:
        """Group dicts appended to ``param_groups`` by hand are added as ``add_param_group``
        would add them (torch steps such a group); an invalid one stays where it was and the
        error says why."""
        known = len(self._states)
        if len(self.param_groups) < known:
            raise RuntimeError(
                f"opt.param_groups has {len(self.param_groups)} groups, the optimizer had "
                f"{known}: groups cannot be removed from a running optimizer"
            )
        appended = self.param_groups[known:]
        del self.param_groups[known:]
        for done, group in enumerate(appended):
            try:
                self.add_param_group(group)
            except Exception:
                self.param_groups.extend(appended[done:])
                raise

    def _migrate(self, index: int, group: dict, structure: tuple):
        """A state for a new structure keeping the old state's fields of the same name."""
        treedef = jax.tree.structure(group["params"])
        old = dict(collect_fields(self._states[index], treedef))
        fresh = self._init_state(group, structure)
        kept = [old.get(name, value) for name, value in collect_fields(fresh, treedef)]
        return replace_fields(fresh, treedef, kept)

    def _update_groups(self, structures, vector, group_params, group_grads, states):
        """Traced: every group's update from its gradient leaves.

        A group whose gradient is ``None`` is left as it is, and so is a parameter whose
        gradient leaf is ``None`` (its value and its per-parameter state; the group's step
        count still advances, as optim_jax keeps one per group). A gradient is cast to its
        parameter's dtype, so the state keeps the parameter's. Shapes and dtypes are checked
        once per compilation.
        """
        offset, new_params, new_states = 0, [], []
        for index, (structure, params, grads, state) in enumerate(
            zip(structures, group_params, group_grads, states)
        ):
            tx, offset = self._transform_for(structure, vector, offset)
            if grads is None:
                new_params.append(params)
                new_states.append(state)
                continue
            flat, treedef = jax.tree_util.tree_flatten_with_path(params)
            present = [g is not None for g in grads]
            full = [
                jnp.zeros_like(p) if g is None else _gradient_for(p, g, index, path)
                for (path, p), g in zip(flat, grads)
            ]
            updates, new_state = tx.update(treedef.unflatten(full), state, params)
            new = apply_updates(params, updates)
            if not all(present):
                new = treedef.unflatten(
                    [n if k else p for n, (_, p), k in zip(_leaves(new), flat, present)]
                )
                new_state = _keep_skipped(state, new_state, treedef, present)
            new_params.append(new)
            new_states.append(new_state)
        return new_params, new_states

    def _compile(
        self, key: Any, fn: Callable, donate: tuple[int, ...], family: Any = None
    ) -> Callable:
        return self._compiled.get(key, fn, donate, family)

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
        accumulate = self._grad is not None

        def run(group_params, grad, arrays):
            (value, others), grads = self._loss_and_grad(objective, group_params, arrays)
            grads = [_leaves(g) for g in grads]
            if accumulate:
                grads = [
                    new if old is None
                    else [n if o is None else jnp.add(o, n) for o, n in zip(old, new)]
                    for old, new in zip(grad, grads)
                ]
            return value, others, grads

        compiled = self._compile(
            ("backward", key, accumulate), run, (1,) if accumulate else (), _family(loss_fn)
        )
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
        for hook in hooks.step_pre_hooks(self._hooks["step_pre"]):
            result = hook(self, (closure, *args), kwargs)
            if result is not None:
                (closure, *args), kwargs = result
        loss = self._step(closure, args, kwargs)
        for hook in hooks.step_post_hooks(self._hooks["step_post"]):
            hook(self, (closure, *args), kwargs)
        return loss

    def _step(self, closure, args, kwargs):
        structures, vector = self._prepare()
        if closure is None:
            self._adopt_module_values()
            if self._grad is None or all(g is None for g in self._grad):
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
                    structures, vector, group_params, [_leaves(g) for g in grads], states
                )
                return value, others, params, states

            compiled = self._compile(
                ("closure", structures, key), fused, (0, 1), _family(closure)
            )
            loss, others, new_params, self._states = compiled(
                self._group_params(), self._states, vector, arrays
            )
            self._grad = None
        for group, params in zip(self.param_groups, new_params):
            group["params"] = params
        self._write_back(key, modules, others)
        return loss

    def register_step_pre_hook(self, hook: Callable) -> hooks.RemovableHandle:
        """Registers ``hook``, called as ``hook(optimizer, args, kwargs)`` before each step.

        The hook may return new ``(args, kwargs)``. Returns a handle whose ``remove()``
        unregisters it.
        """
        return hooks.register(self._hooks["step_pre"], hook)

    def register_step_post_hook(self, hook: Callable) -> hooks.RemovableHandle:
        """Registers ``hook``, called as ``hook(optimizer, args, kwargs)`` after each step.

        Returns a handle whose ``remove()`` unregisters it.
        """
        return hooks.register(self._hooks["step_post"], hook)

    def register_state_dict_pre_hook(
        self, hook: Callable, prepend: bool = False
    ) -> hooks.RemovableHandle:
        """Registers a hook called before ``state_dict()`` builds the dict, as torch's.

        Args:
          hook: called as ``hook(optimizer)``.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return hooks.register(self._hooks["state_dict_pre"], hook, prepend)

    def register_state_dict_post_hook(
        self, hook: Callable, prepend: bool = False
    ) -> hooks.RemovableHandle:
        """Registers a hook called on the dict ``state_dict()`` built, as torch's.

        Args:
          hook: called as ``hook(optimizer, state_dict)``; a dict it returns replaces it.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return hooks.register(self._hooks["state_dict_post"], hook, prepend)

    def register_load_state_dict_pre_hook(
        self, hook: Callable, prepend: bool = False
    ) -> hooks.RemovableHandle:
        """Registers a hook called before ``load_state_dict`` reads the dict, as torch's.

        Args:
          hook: called as ``hook(optimizer, state_dict)``; a dict it returns is loaded instead.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return hooks.register(self._hooks["load_state_dict_pre"], hook, prepend)

    def register_load_state_dict_post_hook(
        self, hook: Callable, prepend: bool = False
    ) -> hooks.RemovableHandle:
        """Registers a hook called after ``load_state_dict`` has loaded, as torch's.

        Args:
          hook: called as ``hook(optimizer)``.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return hooks.register(self._hooks["load_state_dict_post"], hook, prepend)

    # -- state ----------------------------------------------------------------------------

    def _per_param_state(self) -> dict[int, dict[str, jax.Array]]:
        return state_dict_io.per_param_entries(self._group_params(), self._states)

    @property
    def state(self) -> StateView:
        """Per-parameter state with torch's names, e.g. ``opt.state[0]['exp_avg']``."""
        return StateView(self)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [...]}]}``.

        Arrays are copies: the dict stays valid after later (donating) steps. Each group lists
        ``param_names``: the names given as ``(name, array)`` pairs, or the leaves' key paths.
        Unlike torch's, it lists every parameter's state from the start (fresh before the first
        step), so a new optimizer's dict is a restore target for a checkpoint (orbax).
        """
        for hook in list(self._hooks["state_dict_pre"].values()):
            hook(self)
        self._adopt_appended_groups()
        entries = self._per_param_state()
        state = {
            index: {name: jnp.array(value, copy=True) for name, value in entry.items()}
            for index, entry in entries.items()
        }
        groups, index = [], 0
        for group in self.param_groups:
            n = len(_leaves(group["params"]))
            options = {k: list(v) if isinstance(v, list) else v
                       for k, v in group.items() if k != "params"}
            groups.append({**options, "params": list(range(index, index + n))})
            index += n
        result = {"state": state, "param_groups": groups}
        for hook in list(self._hooks["state_dict_post"].values()):
            replaced = hook(self, result)
            result = result if replaced is None else replaced
        return result

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores ``state_dict``, from ``state_dict()`` or from torch; validates before changing.

        Hyperparameter values are taken as saved, as torch takes them (a scheduler may have
        left an lr a rounding below zero); counts, names, shapes and dtypes are checked. Every
        array kept is a copy: ``state_dict`` stays valid after later steps. A torch checkpoint
        (tensors as arrays) loads as torch would load it, see :mod:`optim_jax.state_dict_io`.

        Raises:
          ValueError: naming what differs (group count, parameter count, state names, shapes,
            dtypes); the optimizer is then left as it was. ``TypeError`` for an option of the
            wrong kind.
        """
        for hook in list(self._hooks["load_state_dict_pre"].values()):
            replaced = hook(self, state_dict)
            state_dict = state_dict if replaced is None else replaced
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
        self._adopt_appended_groups()
        saved_groups = state_dict_io.listed(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer "
                f"has {len(self.param_groups)}"
            )
        saved_state = {int(k): v for k, v in dict(state_dict["state"]).items()}
        groups, states, structures = [], [], []
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            indices = [int(i) for i in state_dict_io.listed(saved.get("params", []))]
            treedef = jax.tree.structure(group["params"])
            if len(indices) != treedef.num_leaves:
                raise ValueError(
                    f"loaded state dict's group {g} has {len(indices)} parameters, the "
                    f"optimizer's group {g} has {treedef.num_leaves}"
                )
            new_group = {**group, **state_dict_io.restore_options(saved, group)}
            self._check_option_types(new_group, g)
            structure = self._structure(new_group)
            template = self._init_state(new_group, structure)
            fields = collect_fields(template, treedef)
            state_dict_io.check_entries({name for name, _ in fields}, indices, saved_state)
            values = [
                state_dict_io.gather_field(name, value, treedef, indices, saved_state)
                for name, value in fields
            ]
            groups.append(new_group)
            states.append(_committed(replace_fields(template, treedef, values)))
            structures.append(structure)
        self.param_groups, self._states, self._structures = groups, states, structures
        for hook in list(self._hooks["load_state_dict_post"].values()):
            hook(self)

    # -- copies ----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy.deepcopy`` and ``pickle`` keep: params, state, groups, options, the
        gradient and the nnx Modules. Compiled programs, hooks and caches are rebuilt (torch
        drops hooks the same way)."""
        kept = dict(self.__dict__)
        for name in _REBUILT:
            kept.pop(name, None)
        return kept

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compiled, self._prepared, self._changed = CompileCache(), None, {}
        self._given, self._hooks = {}, _fresh_hooks()
        for group, variables in zip(self.param_groups, self._variables):
            group["params"] = _committed(group["params"])
            if variables is not None:
                nnx_params.set_values(variables, group["params"])
        self._states = [_committed(s) for s in self._states]
        if self._grad is not None:
            self._grad = [None if g is None else _committed(g) for g in self._grad]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines + [")"])


class _Same:
    """Equal only to a wrapper of the very same object (which it keeps alive)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None


def _fingerprint(value: Any) -> Any:
    """A value that compares equal exactly when an option's value is unchanged (arrays by
    identity, as JAX arrays are immutable; NumPy's by content)."""
    if isinstance(value, jax.Array):
        return _Same(value)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(map(_fingerprint, value))
    return value


def _without_names(tree: Any, names: list[str], what: str) -> list:
    """A named group's ``[(name, value), ...]`` as the values, checking the names."""
    if not isinstance(tree, (list, tuple)) or not all(
        isinstance(p, tuple) and len(p) == 2 for p in tree
    ):
        raise ValueError(f"{what} must be (name, array) pairs like the params, got {tree!r:.80}")
    if [name for name, _ in tree] != list(names):
        raise ValueError(f"{what} names {[n for n, _ in tree]} differ from the params' {names}")
    return [value for _, value in tree]


def _family(fn: Callable) -> Any:
    """What programs compiled for one closure share (its code): a recompile warning counts
    the programs of one family."""
    return getattr(fn, "__code__", None) or getattr(getattr(fn, "func", None), "__code__", None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numeric(value: Any, name: str) -> None:
    """A number, a one-element real array, a tracer or a schedule; else a precise error."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.size(value) != 1:
        raise ValueError(f"Tensor {name} must be 1-element, got an array of shape {np.shape(value)}")
    validation.check_type(value, f"Invalid {name}: {value!r}")


def _split_names(group: dict[str, Any]) -> bool:
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


def _path_names(tree: PyTree) -> list[str]:
    """Each leaf's key path, as ``jax.tree_util.keystr`` writes it: a pytree's param names."""
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _check_params(tree: PyTree) -> None:
    """Every leaf a floating (or complex) array or number, as torch optimises only those."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex)):
            raise TypeError(
                "optimizer can only optimize arrays, but the param at "
                f"{jax.tree_util.keystr(path) or 'the root'} is {type(leaf).__name__}"
            )
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise TypeError(
                "optimizer can only optimize floating point or complex arrays, but the param "
                f"at {jax.tree_util.keystr(path) or 'the root'} has dtype "
                f"{jnp.result_type(leaf)}"
            )


# Attributes a copy rebuilds rather than copies: programs, caches, hooks, the caller's arrays.
_REBUILT = ("_compiled", "_prepared", "_changed", "_given", "_hooks")


def _fresh_hooks() -> dict[str, OrderedDict]:
    return {kind: OrderedDict() for kind in _HOOK_KINDS}


_HOOK_KINDS = ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
               "load_state_dict_pre", "load_state_dict_post")


def _committed(tree: PyTree, copy: bool = False) -> PyTree:
    """``tree`` as JAX arrays committed to their devices; with ``copy``, new buffers.

    Every step returns committed arrays; jit compiles separately for uncommitted inputs (fresh
    ``jnp.zeros``, loaded values), so without this the first step would compile twice.
    Committing an array in place copies nothing; ``copy`` is for arrays the caller keeps (given
    to the constructor or to ``load_state_dict``), which the optimizer's steps would otherwise
    donate.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [jnp.asarray(x) for x in leaves]
    moved = [i for i, x in enumerate(arrays) if copy or not x.committed]
    if moved:  # one batched transfer for all of them
        placed = jax.device_put(
            [arrays[i] for i in moved], [arrays[i].sharding for i in moved],
            may_alias=False if copy else None,
        )
        for i, x in zip(moved, placed):
            arrays[i] = x
    return treedef.unflatten(arrays)


def _scalar(value: Any) -> Any:
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"the closure must return a scalar loss, got an array of shape {jnp.shape(value)}"
        )
    return value


def _gradient_for(param: Any, grad: Any, index: int, path: Any) -> Any:
    """``grad`` checked against its parameter's shape and cast to its dtype."""
    where = f"gradient of group {index} at {jax.tree_util.keystr(path) or 'the root'}"
    if jnp.shape(param) != jnp.shape(grad):
        raise ValueError(
            f"{where} has shape {jnp.shape(grad)}, the parameter has {jnp.shape(param)}"
        )
    if jnp.iscomplexobj(grad) and not jnp.iscomplexobj(param):
        raise TypeError(f"{where} is complex ({grad.dtype}), the parameter is {param.dtype}")
    return grad.astype(param.dtype)


def _keep_skipped(old: Any, new: Any, treedef: Any, present: list[bool]) -> Any:
    """``new`` state with the per-parameter entries of parameters not in ``present`` taken
    from ``old`` (a parameter without a gradient keeps its state, as in torch)."""
    kept = []
    for (_, before), (_, after) in zip(collect_fields(old, treedef), collect_fields(new, treedef)):
        if jax.tree.structure(after) == treedef:
            after = treedef.unflatten(
                [a if k else b for a, b, k in zip(_leaves(after), _leaves(before), present)]
            )
        kept.append(after)
    return replace_fields(new, treedef, kept)


