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

import contextlib
import dis
import functools
import sys
import threading
import types
from typing import Any, Callable

import jax
import numpy as np

from optim_jax import nnx_params
from optim_jax.compile_cache import Named

_MAX_DEPTH = 8

# Per thread: ``found``, the nnx Modules met while splitting (host objects); ``copies``, their
# rebuilt copies while a rebuild runs; ``rebuilt``, where rebuilt_modules() collects those
# copies (what a closure changes in a copy is written back to the module).
_modules = threading.local()


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


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Global names a code object (and the lambdas, comprehensions inside it) loads."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _split_value(
    value: Any, arrays: list, depth: int, numbers: bool = False
) -> tuple[Any, Callable]:
    """Static key and rebuild function for one captured value; its arrays go to ``arrays``.

    With ``numbers``, Python numbers inside ``value`` go to ``arrays`` too (explicit step
    arguments); otherwise they are part of the key (captures).
    """
    if _traced(value, numbers):
        index = len(arrays)
        arrays.append(value)
        return _ARRAY, lambda traced: traced[index]
    if type(value) in _SCALARS:
        return (type(value), value), lambda traced: value
    if isinstance(value, (types.FunctionType, functools.partial)) and depth < _MAX_DEPTH:
        return _split(value, arrays, depth + 1)
    if nnx_params.is_module(value):
        return _split_module(value)
    # Modules stop the flattening (split_call splits them together); with none inside, the
    # leaves are the plain flattening's, so one pass serves both cases.
    modules_loaded = "flax.nnx" in sys.modules
    leaves, treedef = jax.tree.flatten(
        value, is_leaf=nnx_params.is_module if modules_loaded else None
    )
    if modules_loaded and any(map(nnx_params.is_module, leaves)):
        parts = [_split_value(v, arrays, depth, numbers) for v in leaves]
        key = ("modules", treedef, tuple(k for k, _ in parts))
        return key, lambda traced: treedef.unflatten([r(traced) for _, r in parts])
    positions = [i for i, leaf in enumerate(leaves) if _traced(leaf, numbers)]
    statics = [None if _traced(leaf, numbers) else leaf for leaf in leaves]
    key = (treedef, tuple(_static(s) for s in statics))
    if not positions:
        return key, lambda traced: value
    start = len(arrays)
    arrays.extend(leaves[i] for i in positions)

    def rebuild(traced):
        filled = list(statics)
        for offset, i in enumerate(positions):
            filled[i] = traced[start + offset]
        return treedef.unflatten(filled)

    return key, rebuild


def _split_module(module: Any) -> tuple[Any, Callable]:
    """A placeholder for an nnx Module: :func:`split_call` splits all the modules it meets
    together, so that what they share (a submodule, an ``nnx.Rngs``) is shared by their
    rebuilt copies too, and each rebuild hands out the copy at the module's position."""
    found = _modules.found
    index = next((i for i, m in enumerate(found) if m is module), len(found))
    if index == len(found):
        found.append(module)
    return ("module", index), lambda traced: _modules.copies[index]


def _holds_module(value: Any) -> bool:
    return "flax.nnx" in sys.modules and any(
        map(nnx_params.is_module, jax.tree.leaves(value, is_leaf=nnx_params.is_module))
    )


_EMPTY = object()


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a variable the closure names but that is not bound yet
        return _EMPTY


def _cell(value: Any) -> types.CellType:
    return types.CellType() if value is _EMPTY else types.CellType(value)


def _split(fn: Any, arrays: list, depth: int) -> tuple[Any, Callable]:
    if isinstance(fn, functools.partial):
        inner_key, inner = _split_value(fn.func, arrays, depth)
        args_key, args = _split_value(fn.args, arrays, depth)
        kwargs_key, kwargs = _split_value(fn.keywords, arrays, depth)
        key = ("partial", inner_key, args_key, kwargs_key)
        return key, lambda t: functools.partial(inner(t), *args(t), **kwargs(t))
    if not isinstance(fn, types.FunctionType):
        return _static(fn), lambda t: fn

    # The rebuild functions below hold the code and the static values only, never ``fn``: a
    # compiled step cached under this key must not keep the first call's arrays alive.
    code, name, module = fn.__code__, fn.__name__, fn.__globals__
    cells_split = [_split_value(_contents(c), arrays, depth) for c in fn.__closure__ or ()]
    cell_names = code.co_freevars
    defaults_key, defaults = _split_value(fn.__defaults__, arrays, depth)
    kwdefaults_key, kwdefaults = _split_value(fn.__kwdefaults__, arrays, depth)
    globals_key, traced_globals = [], {}
    for global_name in _global_names(code):
        value = module.get(global_name, _EMPTY)
        if value is _EMPTY or isinstance(value, types.ModuleType):
            continue  # builtins, modules
        if callable(value) and not any(map(is_array, jax.tree.leaves(value))):
            # A function the closure calls: redefined -> compile again. A callable holding
            # arrays (an nnx Module) is data, split below like any other global.
            globals_key.append(Named(f"global {global_name!r}", _static(value)))
            continue
        before = len(arrays)
        value_key, value_rebuild = _split_value(value, arrays, depth)
        globals_key.append(Named(f"global {global_name!r}", value_key))
        if len(arrays) > before or _holds_module(value):  # a module's arrays may be known
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


def _split_arguments(args: tuple, kwargs: dict, arrays: list) -> tuple[Any, Callable]:
    """Explicit arguments: arrays and Python numbers traced (as ``jax.jit`` traces them), other
    values part of the key under their position or keyword."""
    parts = [_split_value(a, arrays, 0, numbers=True) for a in args]
    named = [(k, _split_value(v, arrays, 0, numbers=True)) for k, v in kwargs.items()]
    key = (
        tuple(Named(f"argument {i + 1}", k) for i, (k, _) in enumerate(parts)),
        tuple(Named(f"keyword {name!r}", k) for name, (k, _) in named),
    )

    def rebuild(traced):
        return tuple(r(traced) for _, r in parts), {name: r(traced) for name, (_, r) in named}

    return key, rebuild


def split_call(
    fn: Callable, args: tuple, kwargs: dict, modules: list | None = None
) -> tuple[Any, list, Callable[[list], tuple[Callable, tuple, dict]]]:
    """Splits the call ``fn(params, *args, **kwargs)`` into ``(key, arrays, rebuild)``.

    Returns:
      key: hashable; equal for two calls of closures made by the same code, with equal
        non-array captures and arguments, whatever their arrays hold.
      arrays: every array captured by ``fn`` or passed in ``args``/``kwargs``, in a fixed order.
      rebuild: ``rebuild(arrays_or_tracers) -> (fn, args, kwargs)`` equivalent to the originals
        but reading the given arrays.

    If ``modules`` is a list, the nnx Modules among the captures and arguments are appended to
    it; :func:`rebuilt_modules` gives their rebuilt copies in the same order.
    """
    arrays: list = []
    found: list = [] if modules is None else modules
    _modules.found = found
    try:
        fn_key, fn_rebuild = _split(fn, arrays, 0)
        args_key, args_rebuild = _split_arguments(args, kwargs, arrays)
    finally:
        del _modules.found
    if not found:
        return (fn_key, args_key), arrays, lambda t: (fn_rebuild(t), *args_rebuild(t))
    graphdef, state = nnx_params.split(tuple(found))
    state_key, state_rebuild = _split_value(state, arrays, 0)

    def rebuild(traced):
        _modules.copies = nnx_params.merge(graphdef, state_rebuild(traced))
        if getattr(_modules, "rebuilt", None) is not None:
            _modules.rebuilt[:] = _modules.copies
        try:
            return fn_rebuild(traced), *args_rebuild(traced)
        finally:
            del _modules.copies

    return (fn_key, args_key, graphdef, state_key), arrays, rebuild


@contextlib.contextmanager
def rebuilt_modules():
    """Collects the copies a rebuild makes of the modules :func:`split_call` found.

    Yields a list that, after the rebuild inside the block, holds each module's copy (the
    objects the rebuilt closure works on) in the order of ``split_call``'s ``modules``.
    """
    _modules.rebuilt = []
    try:
        yield _modules.rebuilt
    finally:
        _modules.rebuilt = None
