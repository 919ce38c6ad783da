"""A user's closure as a traced objective of the optimizer's parameter trees.

``step(closure, *args)`` and ``backward(loss_fn, *args)`` differentiate the closure inside one
compiled call. :func:`split_closure` turns the call into an :class:`Objective`: the static key
the compiled program is cached under, the arrays passed to it, and ``evaluate(trees, arrays)``,
which runs the closure at the traced parameter trees. With nnx Modules the modules themselves go
through :func:`~optim_jax.stateful.functionalize.split_call` like any captured value; their
``Param`` arrays are recognised by identity and read from ``trees`` instead, so the gradient
reaches them.

It also turns the mistakes torch users make into messages that say what to write instead.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from optim_jax.stateful import functionalize, nnx_bridge


class Objective(NamedTuple):
    """A closure split for a compiled step.

    Attributes:
      key: hashable; what the compiled program is cached under.
      arrays: the arrays the closure captured or was passed (``None`` where one is a parameter
        array, which reaches the program as a parameter: one buffer cannot be donated twice).
      modules: the nnx Modules the closure reaches (host objects, for the write-back).
      evaluate: traced ``evaluate(trees, arrays) -> (loss, changed)``: the closure at the group
        trees ``trees``; ``changed`` maps ``(module, leaf)`` to the new value of each non-param
        variable it changed (batch statistics, RNG counters), see
        :func:`~optim_jax.stateful.nnx_bridge.changed_variables`.
    """

    key: Any
    arrays: list
    modules: list
    evaluate: Callable


class ReentryGuard:
    """Notices an optimizer's ``backward``/``step`` called from inside its own closure (torch's
    ``loss.backward()`` habit, as ``opt.backward(...)``), which would otherwise be accepted."""

    def __init__(self) -> None:
        self.active = False

    def check(self, name: str) -> None:
        if self.active:
            raise RuntimeError(
                f"opt.{name}() was called inside the closure: the closure only returns the "
                "loss, and step(closure) differentiates it (drop backward/zero_grad from it)"
            )


def split_closure(
    closure: Callable,
    args: tuple,
    kwargs: dict,
    trees: Callable[[], list],
    assemble: Callable[[list], Any],
    modules_view: Any = None,
    guard: ReentryGuard | None = None,
) -> Objective:
    """The :class:`Objective` of ``closure(params, *args, **kwargs)``.

    Args:
      closure: the user's function of the params.
      args, kwargs: its other arguments (traced as ``jax.jit`` traces them).
      trees: gives the groups' current parameter trees (their leaves are recognised by
        identity among the arrays of nnx Modules the closure reaches); called only then.
      assemble: traced group trees -> the params argument in the user's layout.
      modules_view: with nnx Modules as params, what the closure receives instead (the modules,
        holding the current values); they are split like any argument, so their arrays are
        known.
      guard: marked active while the closure runs (it runs while the step is traced).
    """
    if not callable(closure):
        raise TypeError(
            f"step() and backward() take a closure, a function of the params returning the "
            f"loss; got {type(closure).__name__}"
        )
    if modules_view is not None:
        args = (modules_view, *args)
    key, arrays, modules, rebuild = functionalize.split_call(closure, args, kwargs)
    aliases = ()
    if modules:
        where = {id(leaf): (g, i) for g, tree in enumerate(trees())
                 for i, leaf in enumerate(jax.tree.leaves(tree))}
        aliases = tuple((n, where[id(a)]) for n, a in enumerate(arrays) if id(a) in where)
        for n, _ in aliases:
            arrays[n] = None

    def evaluate(traced_trees: list, traced_arrays: list) -> tuple[Any, dict]:
        flat = [jax.tree.leaves(t) for t in traced_trees]
        traced_arrays = list(traced_arrays)
        for n, (g, i) in aliases:
            traced_arrays[n] = flat[g][i]
        fn, fn_args, fn_kwargs, copies = rebuild(traced_arrays)
        if modules_view is None:
            fn_args = (assemble(traced_trees), *fn_args)
        if guard is not None:
            guard.active = True
        try:
            value = _scalar(_call(fn, fn_args, fn_kwargs))
        finally:
            if guard is not None:
                guard.active = False
        inputs = {id(a) for a in traced_arrays}
        return value, nnx_bridge.changed_variables(copies, inputs)

    return Objective((key, aliases), arrays, modules, evaluate)


def loss_and_gradients(evaluate: Callable, trees: list, arrays: list) -> tuple[Any, dict, list]:
    """Traced: ``(loss, changed, gradients)`` of an objective at the group ``trees``, the
    gradients as each group's leaves."""
    (value, changed), grads = jax.value_and_grad(evaluate, has_aux=True)(trees, arrays)
    # jax.grad of a real loss gives a complex param dL/dx - i dL/dy; torch's gradient (and the
    # steepest ascent the algorithms step against) is its conjugate.
    return value, changed, [[jax.numpy.conj(g) if jax.numpy.iscomplexobj(g) else g
                             for g in jax.tree.leaves(group)] for group in grads]


def _call(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """``fn(*args, **kwargs)``, with torch habits named in the error."""
    try:
        return fn(*args, **kwargs)
    except TypeError as error:
        if "positional argument" in str(error) and not args[1:] and not kwargs:
            raise TypeError(
                f"{error}: the closure receives the params as its first argument, "
                "def closure(params): return loss_fn(params, x, y) (torch's closures take none)"
            ) from error
        raise
    except AttributeError as error:
        if "backward" in str(error):
            raise AttributeError(
                f"{error}: the closure returns the loss and optim_jax differentiates it; "
                "drop loss.backward() (and zero_grad) from the closure"
            ) from error
        raise


def _scalar(value: Any) -> Any:
    if isinstance(value, (tuple, list, dict)):
        raise TypeError(
            f"the closure must return a scalar loss, got a {type(value).__name__}: return the "
            "loss alone (compute what else you need from opt.params after the step)"
        )
    if jax.numpy.ndim(value) != 0:
        raise ValueError(
            f"the closure must return a scalar loss, got an array of shape {jax.numpy.shape(value)}"
        )
    return value
