"""The stateful, torch-style face: ``Optimizer`` and its param groups over the pure transforms.

Every ``step`` is one call of a compiled XLA executable that takes all groups' params, states
and hyperparameters (and, for ``step(closure)``, evaluates the loss and its gradient too).
Executables are cached by what changes the program: the algorithm's boolean options, the tree
structures, the closure's code and its non-array captures. Numeric hyperparameters travel as one
float vector argument, so ``param_groups[i]['lr'] = x`` takes effect without recompiling. The
exception is a hyperparameter whose zero switches work or state off: ``momentum`` (torch makes no
momentum buffer at 0) and ``weight_decay`` (at 0 the step does not read the parameters into the
gradient, which saves a pass over them). Crossing zero compiles once more (both programs stay
cached). A buffer made before momentum went to 0 is kept aside, as torch keeps it in its state
(and in its state_dict), and taken up again when momentum returns.

Hyperparameters reach the program as arrays of the widest enabled float: float32 unless
``jax_enable_x64`` is on. ``1 - beta`` then carries beta's float32 rounding (for beta2 = 0.999, a
relative 1e-5 in the second-moment weight), where torch and the pure transforms built with Python
floats use float64 host arithmetic; with x64 enabled the classes match those to float64 rounding.

What is copied and what is donated: the constructor copies the arrays it is given (the caller's
stay valid, holding the initial values), and so does ``load_state_dict``; ``state_dict()``
returns copies. The optimizer's own params and state are donated to each step: arrays taken from
``opt.params`` or ``opt.state`` before a step are deleted by it (using one raises
``RuntimeError: Array has been deleted``); read them again after the step.

Groups of elementwise algorithms (``contiguous = True``) keep params and state in contiguous
buffers, one per dtype on one device, one per dtype and set of mesh axes when sharded
(:mod:`~optim_jax.stateful.storage`): a step moves a few arrays whatever the number of leaves.
The trees the user reads are made from the buffers when first read after a step (one compiled
call; an nnx Module's at once, to be written into it) and are deleted by the next step, as
donated arrays would be.

The parts: :mod:`~optim_jax.stateful.layout` (the user's params as groups and back),
:mod:`~optim_jax.stateful.groups` (one group's params), :mod:`~optim_jax.stateful.group_options`
(options as statics and one vector), :mod:`~optim_jax.stateful.objective` (a closure as a traced
objective), :mod:`~optim_jax.stateful.nnx_bridge`, :mod:`~optim_jax.stateful.compile_cache`,
:mod:`~optim_jax.stateful.state_dict_io`, :mod:`~optim_jax.stateful.storage` and
:mod:`~optim_jax.stateful.hooks`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from optim_jax.base import PyTree
from optim_jax.state_fields import collect_fields, replace_fields
from optim_jax.stateful import (
    groups as group_params,
    hooks,
    layout,
    nnx_bridge,
    state_dict_io,
    storage,
)
from optim_jax.stateful.compile_cache import CompileCache
from optim_jax.stateful.group_options import GroupOptions, fingerprint
from optim_jax.stateful.groups import GroupRecord, committed
from optim_jax.stateful.objective import (
    Objective,
    ReentryGuard,
    loss_and_gradients,
    split_closure,
)

_IGNORED_TORCH_OPTIONS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


required = group_params.required



class Optimizer(hooks.HookRegistrations, state_dict_io.Checkpointing, storage.GroupStorage):
    """Base of the torch-style optimisers (``SGD``, ``Adam``, ...).

    Subclasses set ``transform`` to a pure factory whose argument names are the group
    hyperparameters (``optim_jax.sgd`` for ``SGD``), and may list in ``static_zeros`` the
    hyperparameters whose value 0 removes a block of the chain (and its state or reads), in
    ``static_args`` numeric ones that shape the program (sizes, iteration counts), in
    ``init_from_defaults`` those whose constructor value (not the group's) builds a fresh state,
    and set ``max_groups``. ``contiguous`` marks an elementwise algorithm, whose groups may be
    kept in contiguous buffers (:mod:`~optim_jax.stateful.storage`).

    The constructor copies the arrays it is given; steps donate the optimizer's own (see the
    module's notes). ``copy.deepcopy`` and ``pickle`` keep params, state, groups and options.

    Args:
      params: a pytree (one group); a list of dicts, each with ``'params'`` (a pytree, or
        torch's ``(name, array)`` pairs) and options overriding ``defaults``; a list of
        ``(name, array)`` pairs; an nnx Module; or :func:`labelled`.
      defaults: default hyperparameters of every group.
      state_layout: wraps each group's transform to lay its state out (what
        ``ZeroRedundancyOptimizer`` passes); ``None`` keeps the transform's own layout.
    """

    transform: Callable[..., Any] | None = None
    static_zeros: tuple[str, ...] = ()
    static_args: tuple[str, ...] = ()
    init_from_defaults: tuple[str, ...] = ()
    max_groups: int | None = None
    contiguous: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "transform" in cls.__dict__ and "__init__" not in cls.__dict__:
            cls.__init__ = _torch_constructor(cls)

    def __init__(
        self, params: Any, defaults: dict[str, Any], *, state_layout: Callable | None = None
    ):
        if self.transform is None:
            raise TypeError(
                f"{type(self).__name__} sets no `transform`: subclass Optimizer with a pure "
                "transform factory, or use SGD, Adam, AdamW, ..."
            )
        self.defaults = dict(defaults)
        self._options = GroupOptions(
            type(self).transform, self.static_args, self.static_zeros, state_layout,
            {name: self.defaults[name] for name in self.init_from_defaults},
        )
        given = {k: v for k, v in self.defaults.items() if v is not required}
        self._options.check_types(given, required={})
        self._options.build(given)
        self.param_groups: list[dict[str, Any]] = []
        self._records: list[GroupRecord] = []
        self._grad: list | None = None  # per group: None, or its leaves (None: no gradient)
        self._reset_caches()
        self._layout, groups = layout.layout_of(params)
        if not groups or not any(jax.tree.leaves(g.get("params")) for g in groups):
            raise ValueError("optimizer got an empty parameter list")
        for group in groups:
            self._add_group(group)
        self._check_group_count(len(self.param_groups))  # after the groups' own checks, as torch

    # What a copy rebuilds rather than copies: programs, caches, hooks, the caller's arrays.
    _rebuilt = ("_compiled", "_prepared", "_given", "_hooks", "_reentry")

    def _reset_caches(self) -> None:
        self._compiled, self._prepared, self._hooks = CompileCache(), None, hooks.fresh_hooks()
        self._reentry = ReentryGuard()
        # id -> each JAX array given as a parameter, so a user's array is recognised later (it
        # is not the optimizer's copy); kept alive so an id is never reused.
        self._given: dict = {}

    # -- groups -------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds ``param_group`` (``'params'`` and options overriding ``defaults``), as torch does.

        Its state starts empty.
        """
        grown = self._layout.grown()
        self._check_group_count(len(self.param_groups) + 1)
        self._add_group(param_group)
        self._layout = grown

    def _check_group_count(self, count: int) -> None:
        if self.max_groups is not None and count > self.max_groups:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )

    def _add_group(self, param_group: dict[str, Any]) -> None:
        """Validates and adds one group, in torch's order of checks; nothing changes on error."""
        current = [leaf for g in self.param_groups for leaf in jax.tree.leaves(g["params"])]
        group, record, given = group_params.new_group(
            param_group, self.defaults, self._options,
            taken={*map(id, current), *self._given},
            named_groups={r.named for r in self._records},
            modules_allowed=not isinstance(self._layout, layout.LabelledLayout),
        )
        record.packing = storage.packing_for(
            group["params"], record.state, self.contiguous and self._options.state_layout is None,
            self._options.shared_up_to(group, group["params"]))
        init = functools.partial(self._options.init_state, group, record.structure)
        group, buffers = storage.ParamGroup.showing(group), None
        if record.packing is not None:
            buffers = storage.run(record.packing, "pack", group["params"])
            record.offsets = storage.placed_offsets(record.packing, buffers)
        record.state = storage.initial_state(record, init, group["params"], buffers)
        if record.packing is not None:
            storage.keep(group, record, buffers)
        self.param_groups.append(group)
        self._records.append(record)
        self._given.update((id(leaf), leaf) for leaf in given if isinstance(leaf, jax.Array))
        if self._grad is not None:
            self._grad.append(None)

    def _adopt_appended_groups(self) -> None:
        group_params.adopt_appended(self.param_groups, len(self._records), self.add_param_group)

    # -- parameters and gradients in the user's layout ----------------------------------------

    def _assemble(self, trees: list) -> PyTree:
        """Group trees (internal, or nnx Modules) in the user's layout."""
        return self._layout.assemble([
            tree if nnx_bridge.is_module(tree) else record.shown(group.get("param_names"), tree)
            for tree, record, group in zip(trees, self._records, self.param_groups)
        ])

    @property
    def params(self) -> PyTree:
        """The current parameters in the layout given to the constructor.

        Groups given as nnx Modules appear as those modules (holding the current values).
        """
        return self._assemble(
            [g["params"] if r.module is None else r.module
             for g, r in zip(self.param_groups, self._records)]
        )

    @property
    def grad(self) -> PyTree | None:
        """The accumulated gradient in the params' layout (``None`` after ``zero_grad``).

        A parameter that has no gradient shows ``None`` (torch's ``p.grad is None``); assigning
        ``None`` there makes ``step()`` skip that parameter, as torch does.
        """
        if self._grad is None:
            return None
        return self._assemble([
            jax.tree.structure(p).unflatten(g if g is not None else [None] * len(jax.tree.leaves(p)))
            for p, g in zip(self._group_params(), self._grad)
        ])

    @grad.setter
    def grad(self, value: PyTree | None) -> None:
        self._grad = None if value is None else group_params.gradient_leaves(
            self._layout.split(value, len(self.param_groups), "grad"), self._records,
            self.param_groups, [storage.treedef(g, r)
                                for g, r in zip(self.param_groups, self._records)],
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the gradient: ``None`` when ``set_to_none`` (torch's default), else zeros."""
        self._grad = None if set_to_none else [
            committed([jnp.zeros_like(p) for p in jax.tree.leaves(tree)])
            for tree in self._group_params()
        ]

    # -- compiled programs --------------------------------------------------------------------

    def _prepare(self) -> tuple[tuple, jax.Array]:
        """Current structures (migrating state whose structure changed) and the option vector.

        Both are cached against the groups' option values, so an unchanged step costs one
        comparison here. Groups edited by hand are checked first (a missing option is a
        ``KeyError``, a value of the wrong kind a ``TypeError``), before anything changes.
        """
        self._adopt_appended_groups()
        options = [[fingerprint(dict.get(group, n)) for n in self._options.names]  # no 'params'
                   for group in self.param_groups]
        if self._prepared is not None and self._prepared[0] == options:
            return self._prepared[1]
        for index, group in enumerate(self.param_groups):
            self._options.check_types(group, required=self.defaults, index=index)
        for index, (group, record) in enumerate(zip(self.param_groups, self._records)):
            structure = self._options.structure(group)
            if structure != record.structure:
                storage.migrate(self._options, group, record, index, structure)
        structures = tuple(r.structure for r in self._records)
        prepared = structures, self._options.vector(self.param_groups, list(structures))
        self._prepared = options, prepared
        return prepared

    def _compile(self, key: Any, fn: Callable, donate: tuple[int, ...], family: Any = None):
        return self._compiled.get(key, fn, donate, family)

    def _objective(self, closure: Callable, args: tuple, kwargs: dict) -> Objective:
        """The closure as a traced objective; groups given as nnx Modules first take up values
        put into them since the last step."""
        as_modules = any(r.variables is not None for r in self._records)
        if as_modules:
            self._adopt_module_values()
        return split_closure(closure, args, kwargs, self._group_params, self._assemble,
                             self.params if as_modules else None, self._reentry)

    def _closure_program(self, objective: Objective, structures: tuple) -> Callable:
        """The compiled body of ``step(closure)``: ``(held params, states, vector, arrays,
        offsets) -> (loss, changed, held params, states)``. LBFGS replaces it with its whole
        line-searched step."""

        evaluate = objective.evaluate  # not the objective: a cached program must not keep its arrays
        options, layout = self._options, self._step_layout()

        def fused(held, states, vector, arrays, offsets):
            trees = storage.views(layout[0], held, offsets)
            value, changed, grads = loss_and_gradients(evaluate, trees, arrays)
            held, states = update_groups(options, structures, *layout, held, states, vector,
                                         grads, after=value)
            return value, changed, held, states

        return fused

    # -- the torch API ------------------------------------------------------------------------

    def backward(self, loss_fn: Callable, *args: Any, **kwargs: Any) -> jax.Array:
        """Evaluates ``loss_fn(params, *args, **kwargs)`` and adds its gradient into ``grad``.

        With nnx Modules as params, ``loss_fn`` receives the module(s) as ``params`` do.
        One compiled call; like torch's ``loss.backward()``, gradients accumulate across calls
        until ``zero_grad()``. Returns the loss.
        """
        self._reentry.check("backward")
        objective = self._objective(loss_fn, args, kwargs)
        accumulate, evaluate = self._grad is not None, objective.evaluate
        packings = self._packings()

        def run(held, grad, arrays, offsets):
            trees = storage.views(packings, held, offsets)
            value, changed, grads = loss_and_gradients(evaluate, trees, arrays)
            if accumulate:
                grads = [new if old is None else [n if o is None else o + n for o, n in zip(old, new)]
                         for old, new in zip(grad, grads)]
            return value, changed, grads

        compiled = self._compile(("backward", objective.key, accumulate, packings), run,
                                 (1,) if accumulate else (), _family(loss_fn))
        value, changed, self._grad = compiled(
            self._held(), self._grad if accumulate else None, objective.arrays, self._offsets()
        )
        nnx_bridge.write_back(objective.modules, changed)
        return value

    def step(self, closure: Callable | None = None, *args: Any, **kwargs: Any) -> jax.Array | None:
        """Takes one optimisation step, from ``grad`` or from a ``closure``.

        ``step()`` applies the update for ``grad``. ``step(closure, *args, **kwargs)``
        differentiates ``closure(params, *args, **kwargs)`` (a scalar loss) and applies the
        update in the same compiled call; ``grad`` is then ``None``. Returns the loss (or
        ``None`` without a closure).
        """
        self._reentry.check("step")
        for hook in hooks.step_pre_hooks(self._hooks["step_pre"]):
            result = hook(self, (closure, *args), kwargs)
            if result is not None:
                (closure, *args), kwargs = result
        loss = self._step(closure, args, kwargs)
        for hook in hooks.step_post_hooks(self._hooks["step_post"]):
            hook(self, (closure, *args), kwargs)
        return loss

    def _step(self, closure: Callable | None, args: tuple, kwargs: dict) -> jax.Array | None:
        structures, vector = self._prepare()
        if closure is None:
            self._adopt_module_values()
            if self._grad is None or all(g is None for g in self._grad):
                raise RuntimeError(
                    "step() needs a gradient: call opt.backward(loss_fn, ...) or assign "
                    "opt.grad first, or pass a closure: opt.step(closure)"
                )

            layout = self._step_layout()
            apply = functools.partial(update_groups, self._options, structures, *layout)
            compiled = self._compile(("apply", structures, *layout), apply, (0, 1))
            held, states = compiled(self._held(), self._states(), vector, self._grad)
            self._commit(held, states, [], {})
            return None
        objective = self._objective(closure, args, kwargs)
        key = ("closure", structures, *self._step_layout(), objective.key)
        compiled = self._compiled.find(key) or self._compile(  # built only when missing
            key, self._closure_program(objective, structures), (0, 1), _family(closure))
        loss, changed, held, states = compiled(self._held(), self._states(), vector,
                                               objective.arrays, self._offsets())
        self._grad = None
        self._commit(held, states, objective.modules, changed)
        return loss

    def __repr__(self) -> str:
        return group_params.describe(type(self).__name__, self.param_groups)


def update_groups(
    options: GroupOptions, structures: tuple, packings: tuple, local: tuple, placements: tuple,
    held: list, states: list, vector: Any, grads: list, after: Any = None
) -> tuple[list, list]:
    """Traced: every group's update from its gradient leaves, over its held params (buffers
    where ``packings`` has a packing, else the tree). A group whose arrays are on one device
    (``local``) may take its step through a CPU kernel (:func:`optim_jax.fused.fused_update`).

    A group whose gradient is ``None`` is left as it is, and so is a parameter whose gradient
    leaf is ``None`` (its value and its per-parameter state; the group's step count still
    advances, as optim_jax keeps one per group). A gradient is cast to its parameter's dtype,
    so the state keeps the parameter's. Shapes and dtypes are checked once per compilation.
    A sharded group kept as a tree keeps its leaves' shardings (``placements``).
    ``after``: the closure's loss, when the same program computes it from the params (see
    :func:`optim_jax.fused.fused_update`).
    """
    offset, new_held, new_states = 0, [], []
    groups = zip(structures, packings, local, placements, held, grads, states)
    for index, (structure, packing, one_device, shardings, value, leaves, state) in enumerate(
            groups):
        group_options, offset = options.options_for(structure, vector, offset)
        if leaves is None:
            new_held.append(value)
            new_states.append(state)
            continue
        params = value if packing is None else packing.shapes()
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        present = [g is not None for g in leaves]
        full = treedef.unflatten([
            jnp.zeros(p.shape, p.dtype) if g is None
            else group_params.gradient_for(p, g, index, path)
            for (path, p), g in zip(flat, leaves)
        ])
        if packing is None:
            new, new_state = options.step(group_options, one_device, value, full, state,
                                          after=after)
        else:
            packed, parts = packing.packed_and_parts(full)
            new, new_state = options.step(group_options, one_device, value, packed, state,
                                          parts, after)
        if not all(present):
            new, new_state = _keep_skipped(value, state, new, new_state, packing, present)
        if shardings is not None:
            new, new_state = storage.placed(new, shardings[0]), storage.placed(new_state,
                                                                               shardings[1])
        new_held.append(new)
        new_states.append(new_state)
    return new_held, new_states


def _keep_skipped(
    params: Any, state: Any, new_params: Any, new_state: Any, packing: Any, present: list[bool]
) -> tuple[Any, Any]:
    """``new_params`` and ``new_state`` with the parameters not in ``present`` (and their
    per-parameter state entries) as they were: a parameter without a gradient keeps both, as in
    torch. Held params and states are unpacked and packed again around the choice."""
    if packing is not None:
        unpacked = _keep_skipped(packing.unpack(params), packing.unpack_state(state),
                                 packing.unpack(new_params), packing.unpack_state(new_state),
                                 None, present)
        return packing.pack(unpacked[0]), packing.pack_state(unpacked[1])
    treedef = jax.tree.structure(params)
    kept_params = treedef.unflatten([n if k else p for n, p, k in zip(
        jax.tree.leaves(new_params), jax.tree.leaves(params), present)])
    return kept_params, _kept_state(state, new_state, treedef, present)


def _kept_state(old: Any, new: Any, treedef: Any, present: list[bool]) -> Any:
    kept = []
    for (_, before), (_, after) in zip(collect_fields(old, treedef), collect_fields(new, treedef)):
        if jax.tree.structure(after) == treedef:
            after = treedef.unflatten([a if k else b for a, b, k in
                                       zip(jax.tree.leaves(after), jax.tree.leaves(before), present)])
        kept.append(after)
    return replace_fields(new, treedef, kept)


def _family(fn: Callable) -> Any:
    """What programs compiled for one closure share (its code): a recompile warning counts
    the programs of one family."""
    return getattr(fn, "__code__", None) or getattr(getattr(fn, "func", None), "__code__", None)


def _torch_constructor(cls: type) -> Callable:
    """torch's constructor for a class that sets ``transform``, from the factory's signature.

    ``Adam(params, lr=1e-3, betas=(0.9, 0.999), ...)`` takes exactly :func:`adam`'s
    arguments, in torch's order, plus torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable``, which are accepted for drop-in compatibility and ignored: every step
    is one fused XLA program already.
    """
    signature = inspect.signature(cls.transform)
    parameters = [
        inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *signature.parameters.values(),
        *(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
          for name, default in _IGNORED_TORCH_OPTIONS.items()),
    ]
    full = signature.replace(parameters=parameters, return_annotation=None)

    def __init__(self, *args: Any, state_layout: Callable | None = None, **kwargs: Any) -> None:
        if "learning_rate" in kwargs and "learning_rate" not in full.parameters:
            raise TypeError(
                f"{cls.__name__} got an unexpected keyword argument 'learning_rate': optim_jax "
                "uses torch's names, lr=..."
            )
        bound = full.bind(*args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        Optimizer.__init__(self, options.pop("params"), options, state_layout=state_layout)

    __init__.__signature__ = full.replace(
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *parameters]
    )
    __init__.__doc__ = f"Builds {cls.__name__}; its arguments are described in the class docstring."
    return __init__
