"""Turning a user's closure into (static key, array arguments) so a compiled step is reused.

torch's idiom re-creates the closure every iteration, capturing the new batch::

    for x, y in batches:
        def closure(p):
            return loss_fn(p, x, y)
        opt.step(closure)

Each closure is a new function object, and ``jax.jit`` over it would retrace every time and bake
the batch in as a constant. :func:`split_call` instead separates what the function *is* (its
code, and the non-array values it captured: a static, hashable key) from the arrays it captured
(cells, defaults, ``functools.partial`` arguments, and module globals its code reads). The
compiled step takes those arrays as arguments and rebuilds an equivalent function around the
traced values. Python numbers, strings, other objects and the functions a closure *captures* stay
part of the key: changing one (redefining ``loss_fn``, say) compiles again, which is correct (it
may decide shapes) but slow if it changes every step. Arguments passed explicitly
(``opt.step(closure, x, y, scale)``) are treated as ``jax.jit`` treats its arguments: arrays and
Python numbers are traced (a new ``scale`` reuses the program); bools, strings and other objects
are part of the key.
"""

from __future__ import annotations

import dis
import functools
import sys
import types
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from optim_jax.stateful import nnx_bridge
from optim_jax.stateful.compile_cache import Named
from optim_jax.stateful.groups import every_leaf

_MAX_DEPTH = 8


class _Found(NamedTuple):
    """What splitting collects: the arrays to pass to the compiled step, and the nnx Modules
    met (host objects), which are split together after the walk."""

    arrays: list
    modules: list


class _Traced(NamedTuple):
    """What a rebuild reads: the traced arrays, and the rebuilt copies of the modules."""

    arrays: Any
    copies: Any


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array a compiled step takes as an argument (JAX or NumPy)."""
    return isinstance(x, (jax.Array, np.ndarray))


_NUMBERS = (int, float, complex)


def _traced(x: Any, numbers: bool) -> bool:
    """Whether ``x`` becomes an argument of the compiled step: arrays always; Python numbers
    (not bools) when ``numbers``, as ``jax.jit`` traces the numbers passed to it."""
    return is_array(x) or (numbers and type(x) in _NUMBERS)


class _Identity:
    """A key part for an unhashable object: equal only to itself, kept alive by the key."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


def _static(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        return _Identity(x)
    return (type(x), x)


_LOADS = {"LOAD_GLOBAL", "LOAD_NAME"}
_SCALARS = (int, float, complex, bool, str, bytes, type(None))
_ARRAY = "array"
_ALL_TRACED = "every leaf traced"
_CODE = (types.FunctionType, types.BuiltinFunctionType, type)  # callables that hold no arrays


@functools.lru_cache(maxsize=256)
def _module_inside(treedef: Any) -> bool:
    """Whether a structure has an nnx Module among its nodes (once per structure)."""
    data = treedef.node_data()
    return (data is not None and nnx_bridge.is_module_type(data[0])) or any(
        map(_module_inside, treedef.children()))


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Global names a code object (and the lambdas, comprehensions inside it) loads."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _split_value(
    value: Any, found: _Found, depth: int, numbers: bool = False
) -> tuple[Any, Callable]:
    """Static key and rebuild function for one captured value; its arrays go to ``found``.

    With ``numbers``, Python numbers inside ``value`` go to ``arrays`` too (explicit step
    arguments); otherwise they are part of the key (captures).
    """
    if _traced(value, numbers):
        index = len(found.arrays)
        found.arrays.append(value)
        return _ARRAY, lambda traced: traced.arrays[index]
    if type(value) in _SCALARS:
        return (type(value), value), lambda traced: value
    if isinstance(value, (types.FunctionType, functools.partial)) and depth < _MAX_DEPTH:
        return _split(value, found, depth + 1)
    if nnx_bridge.is_module(value):
        return _split_module(value, found)
    modules_loaded = "flax.nnx" in sys.modules
    leaves, treedef = jax.tree.flatten(value)
    if every_leaf(leaves, functools.partial(_traced, numbers=numbers)) and not (
            modules_loaded and _module_inside(treedef)):
        # Arrays only (a batch, a list of targets): no walk over the leaves.
        start, count = len(found.arrays), len(leaves)
        found.arrays.extend(leaves)
        return (treedef, _ALL_TRACED), lambda traced: treedef.unflatten(
            traced.arrays[start:start + count])
    if modules_loaded:
        # Modules stop the flattening (split_call splits them together); with none inside,
        # the leaves are the plain flattening's.
        leaves, treedef = jax.tree.flatten(value, is_leaf=nnx_bridge.is_module)
    if modules_loaded and any(map(nnx_bridge.is_module, leaves)):
        parts = [_split_value(v, found, depth, numbers) for v in leaves]
        key = ("modules", treedef, tuple(k for k, _ in parts))
        return key, lambda traced: treedef.unflatten([r(traced) for _, r in parts])
    positions = [i for i, leaf in enumerate(leaves) if _traced(leaf, numbers)]
    statics = [None if _traced(leaf, numbers) else leaf for leaf in leaves]
    key = (treedef, tuple(_static(s) for s in statics))
    if not positions:
        return key, lambda traced: value
    start = len(found.arrays)
    found.arrays.extend(leaves[i] for i in positions)

    def rebuild(traced):
        filled = list(statics)
        for offset, i in enumerate(positions):
            filled[i] = traced.arrays[start + offset]
        return treedef.unflatten(filled)

    return key, rebuild


def _split_module(module: Any, found: _Found) -> tuple[Any, Callable]:
    """A placeholder for an nnx Module: :func:`split_call` splits all the modules it meets
    together, so that what they share (a submodule, an ``nnx.Rngs``) is shared by their
    rebuilt copies too, and each rebuild hands out the copy at the module's position."""
    modules = found.modules
    index = next((i for i, m in enumerate(modules) if m is module), len(modules))
    if index == len(modules):
        modules.append(module)
    return ("module", index), lambda traced: traced.copies[index]


def _holds_module(value: Any) -> bool:
    return "flax.nnx" in sys.modules and any(
        map(nnx_bridge.is_module, jax.tree.leaves(value, is_leaf=nnx_bridge.is_module))
    )


_EMPTY = object()


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a variable the closure names but that is not bound yet
        return _EMPTY


def _cell(value: Any) -> types.CellType:
    return types.CellType() if value is _EMPTY else types.CellType(value)


def _split(fn: Any, found: _Found, depth: int) -> tuple[Any, Callable]:
    if isinstance(fn, functools.partial):
        inner_key, inner = _split_value(fn.func, found, depth)
        args_key, args = _split_value(fn.args, found, depth)
        kwargs_key, kwargs = _split_value(fn.keywords, found, depth)
        key = ("partial", inner_key, args_key, kwargs_key)
        return key, lambda t: functools.partial(inner(t), *args(t), **kwargs(t))
    if not isinstance(fn, types.FunctionType):
        return _static(fn), lambda t: fn

    # The rebuild functions below hold the code and the static values only, never ``fn``: a
    # compiled step cached under this key must not keep the first call's arrays alive.
    code, name, module = fn.__code__, fn.__name__, fn.__globals__
    cells_split = [_split_value(_contents(c), found, depth) for c in fn.__closure__ or ()]
    cell_names = code.co_freevars
    defaults_key, defaults = _split_value(fn.__defaults__, found, depth)
    kwdefaults_key, kwdefaults = _split_value(fn.__kwdefaults__, found, depth)
    globals_key, traced_globals = [], {}
    for global_name in _global_names(code):
        value = module.get(global_name, _EMPTY)
        if value is _EMPTY or isinstance(value, types.ModuleType):
            continue  # builtins, modules
        if isinstance(value, _CODE) or (
                callable(value) and not any(map(is_array, jax.tree.leaves(value)))):
            # A function the closure calls: redefined -> compile again. A callable holding
            # arrays (an nnx Module) is data, split below like any other global.
            globals_key.append(Named(f"global {global_name!r}", _static(value)))
            continue
        before = len(found.arrays)
        value_key, value_rebuild = _split_value(value, found, depth)
        globals_key.append(Named(f"global {global_name!r}", value_key))
        if len(found.arrays) > before or _holds_module(value):  # a module's arrays may be known
            traced_globals[global_name] = value_rebuild
    key = (
        code,
        id(module),
        tuple(Named(f"captured {n!r}", k) for n, (k, _) in zip(cell_names, cells_split)),
        Named("defaults", defaults_key),
        kwdefaults_key,
        tuple(globals_key),
    )

    def rebuild(traced):
        closure = tuple(_cell(r(traced)) for _, r in cells_split) or None
        namespace = module
        if traced_globals:
            namespace = dict(module)
            namespace.update({n: r(traced) for n, r in traced_globals.items()})
        new = types.FunctionType(code, namespace, name, defaults(traced), closure)
        new.__kwdefaults__ = kwdefaults(traced)
        return new

    return key, rebuild


def _split_arguments(args: tuple, kwargs: dict, found: _Found) -> tuple[Any, Callable]:
    """Explicit arguments: arrays and Python numbers traced (as ``jax.jit`` traces them), other
    values part of the key under their position or keyword."""
    parts = [_split_value(a, found, 0, numbers=True) for a in args]
    named = [(k, _split_value(v, found, 0, numbers=True)) for k, v in kwargs.items()]
    key = (
        tuple(Named(f"argument {i + 1}", k) for i, (k, _) in enumerate(parts)),
        tuple(Named(f"keyword {name!r}", k) for name, (k, _) in named),
    )

    def rebuild(traced):
        return tuple(r(traced) for _, r in parts), {name: r(traced) for name, (_, r) in named}

    return key, rebuild


def split_call(
    fn: Callable, args: tuple, kwargs: dict
) -> tuple[Any, list, list, Callable[[list], tuple[Callable, tuple, dict, list]]]:
    """Splits the call ``fn(params, *args, **kwargs)`` into ``(key, arrays, modules, rebuild)``.

    Returns:
      key: hashable; equal for two calls of closures made by the same code, with equal
        non-array captures and arguments, whatever their arrays hold.
      arrays: every array captured by ``fn`` or passed in ``args``/``kwargs``, in a fixed order.
      modules: the nnx Modules among the captures and arguments, in a fixed order.
      rebuild: ``rebuild(arrays_or_tracers) -> (fn, args, kwargs, copies)``: equivalents of the
        originals reading the given arrays, and the copies of ``modules`` they work on (what a
        closure changes in a copy is what it would have changed in the module).
    """
    found = _Found([], [])
    fn_key, fn_rebuild = _split(fn, found, 0)
    args_key, args_rebuild = _split_arguments(args, kwargs, found)
    if not found.modules:

        def rebuild_plain(arrays):
            traced = _Traced(arrays, [])
            return fn_rebuild(traced), *args_rebuild(traced), []

        return (fn_key, args_key), found.arrays, [], rebuild_plain
    graphdef, state = nnx_bridge.split(tuple(found.modules))
    state_key, state_rebuild = _split_value(state, found, 0)

    def rebuild(arrays):
        copies = nnx_bridge.merge(graphdef, state_rebuild(_Traced(arrays, [])))
        traced = _Traced(arrays, copies)
        return fn_rebuild(traced), *args_rebuild(traced), list(copies)

    return (fn_key, args_key, graphdef, state_key), found.arrays, found.modules, rebuild
