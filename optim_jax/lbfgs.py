"""L-BFGS with torch.optim.LBFGS's exact iterates, run entirely inside XLA.

torch's algorithm (after minFunc): the two-loop recursion over the last ``history_size``
curvature pairs, its first step ``min(1, 1/|g|_1) * lr``, its rule that skips pairs with
``y.s <= 1e-10``, its stopping tests and its strong-Wolfe line search (cubic interpolation,
``c1=1e-4``, ``c2=0.9``, at most ``max_eval`` evaluations per step). torch flattens the
parameters into one vector; here every vector (the direction, the gradients, each history row) is
a pytree shaped like the params, and dot products and norms are sums (maxima) of per-leaf
reductions, so sharded params keep their layout and only those scalar reductions communicate. The
history lives in fixed-size ring buffers; every loop is a ``lax.while_loop``, so a whole ``step``
(all evaluations of the objective and its gradient, the line search, the history updates) is one
compiled call, and it works under ``jax.vmap`` (many problems solved at once).

Beyond torch: a non-finite loss or gradient stops the step without taking the move that produced
it, and ``state.nonfinite`` says so (torch would carry NaNs into the parameters).

Precision. torch keeps the losses, the step length ``t`` and the line search's brackets and bounds
as Python floats (float64) until they meet a tensor: ``t`` becomes a tensor on the very first
iteration when ``1/|g|_1 < 1``, and where a cubic's minimiser (a tensor) is taken; the
directional derivatives are tensors throughout. With float32 params this is float32 arithmetic
for some scalars and float64 for others, decided as the search runs. Here each such scalar is a
:class:`optim_jax.numerics.Mixed`, which carries that kind and rounds as torch does. float64
inside one compiled call needs ``jax_enable_x64``, which float32 users rarely turn on, so a
float is a double-float (two float32 numbers, about 48 bits, error-free additions and products
with no float64 and no reliance on XLA not fusing multiply-adds); its value as a tensor sees it
is the nearest float32, as torch's. Computing the scalars on the host would cost a device round
trip per line-search evaluation and split the step into many calls. An ``lr`` that arrives
traced (the stateful classes' hyperparameters) carries the precision it arrives with: float32
when x64 is off. The float64 path is plain float64 as before.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from optim_jax import numerics, validation
from optim_jax.numerics import Mixed, py_max, py_min, select
from optim_jax.base import GradientTransformationExtraArgs, Params
from optim_jax.sharding import place_state

_C1, _C2 = 1e-4, 0.9  # strong-Wolfe constants, as torch
_LINE_SEARCH_TOLERANCE = 1e-9  # torch's line search ignores the optimiser's tolerance_change


class LBFGSState(NamedTuple):
    """torch's LBFGS state over a parameter pytree; the history is a ring buffer.

    The pytree fields have each param's dtype and sharding (the history buffers on the axes after
    the history axis); the scalars and ``ro`` have the params' common (promoted) dtype and are
    replicated over the params' mesh.

    Attributes:
      d: the last search direction, a pytree shaped like the params.
      t: the last step length (scalar).
      old_dirs: ring buffer of the ``y`` vectors (gradient differences): a pytree like the
        params whose every leaf has a leading ``history_size`` axis, one row per pair.
      old_stps: ring buffer of the ``s`` vectors (steps), laid out as ``old_dirs``.
      ro: ring buffer of ``1 / (y . s)``, shape ``(history_size,)``.
      num_old: how many pairs are stored.
      head: the row of the oldest pair.
      H_diag: :math:`\\gamma = s \\cdot y / y \\cdot y` of the newest pair, the initial inverse
        Hessian scale.
      prev_flat_grad: the gradient where ``d`` was taken, shaped like the params (torch's name
        kept, though nothing is flattened).
      prev_loss: the loss there.
      n_iter: iterations over all steps.
      func_evals: evaluations over all steps.
      nonfinite: whether the last step stopped on a non-finite loss or gradient.
    """

    d: Params
    t: jax.Array
    old_dirs: Params
    old_stps: Params
    ro: jax.Array
    num_old: jax.Array
    head: jax.Array
    H_diag: jax.Array
    prev_flat_grad: Params
    prev_loss: jax.Array
    n_iter: jax.Array
    func_evals: jax.Array
    nonfinite: jax.Array


class Options(NamedTuple):
    lr: Any
    max_iter: int
    max_eval: int
    tolerance_grad: Any
    tolerance_change: Any
    history_size: int
    line_search_fn: str | None


def _options(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
             line_search_fn) -> Options:
    validation.check_lr(lr)
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"only 'strong_wolfe' is supported, got line_search_fn={line_search_fn!r}")
    for name, value in (("max_iter", max_iter), ("history_size", history_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name}: {value} (a positive int)")
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    return Options(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
                   line_search_fn)


# -- the params pytree as one vector: torch's flat-vector arithmetic, leaf by leaf -----------


def _dot(a: Params, b: Params) -> jax.Array:
    """``a . b`` over all leaves. An elementwise product summed over every axis keeps sharded
    leaves unreshaped, so the only communication is the partial sums' all-reduce, and it is
    well defined on meshes with Explicit axes too (where a contraction needs an output
    sharding)."""
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha: jax.Array, y: Params, x: Params) -> Params:
    """``x + alpha * y``, each leaf kept in its own dtype."""
    return jax.tree.map(lambda xi, yi: (xi + alpha * yi).astype(xi.dtype), x, y)


def _scale(alpha: jax.Array, x: Params) -> Params:
    """``alpha * x``, each leaf kept in its own dtype."""
    return jax.tree.map(lambda xi: (alpha * xi).astype(xi.dtype), x)


def _max_abs(tree: Params) -> jax.Array:
    """``max |x|`` over all leaves; NaN propagates (``jnp.maximum``), which ``_nonfinite`` needs.
    Empty leaves are left out: a max over nothing has no value."""
    return functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)
                                          if jnp.size(x)])


def _sum_abs(tree: Params) -> jax.Array:
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree))


def _history_zeros(leaf: jax.Array, history_size: int) -> jax.Array:
    """``history_size`` zero rows shaped like ``leaf``, sharded like it along the row axes."""
    shape, dtype = (history_size,) + jnp.shape(leaf), jnp.result_type(leaf)
    sharding = None if isinstance(leaf, jax.core.Tracer) else getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return jnp.zeros(shape, dtype, device=sharding.update(spec=P(None, *sharding.spec)))
    return jnp.zeros(shape, dtype)


def init_state(params: Params, history_size: int) -> LBFGSState:
    """The empty state for ``params``: param-shaped fields take each param's sharding (the
    history buffers along their row axes); the rest is left to :func:`place_state`.

    Raises:
      ValueError: for complex params, which this L-BFGS does not step yet (torch's views them
        as real pairs).
    """
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            "LBFGS: complex params are not supported yet; optimise their real and imaginary "
            "parts as a real array (jnp.stack([z.real, z.imag], -1)), as torch's LBFGS views "
            "them")
    # Every field its own buffer: the stateful class donates the state, and a buffer cannot be
    # donated twice.
    zero = lambda: jnp.zeros([], dtype)  # noqa: E731
    int0 = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
    vector = lambda: jax.tree.map(numerics.zeros_like, params)  # noqa: E731
    history = lambda: jax.tree.map(lambda p: _history_zeros(p, history_size), params)  # noqa: E731
    return LBFGSState(
        d=vector(), t=zero(), old_dirs=history(), old_stps=history(),
        ro=jnp.zeros((history_size,), dtype), num_old=int0(), head=int0(),
        H_diag=jnp.ones([], dtype), prev_flat_grad=vector(), prev_loss=zero(),
        n_iter=int0(), func_evals=int0(), nonfinite=jnp.zeros([], bool),
    )


def _cubic_interpolate(x1: Mixed, f1, g1, x2: Mixed, f2, g2, bounds=None) -> Mixed:
    """Minimiser of the cubic through two points with slopes, clamped to ``bounds``.

    With torch's operand kinds: the abscissae and bounds are floats or tensors (``Mixed``),
    the losses ``f1``, ``f2`` floats (values of the params' dtype, so exact there), the slopes
    ``g1``, ``g2`` tensors; the minimiser is a tensor, a bound keeps its kind.
    """
    if bounds is None:
        ordered = x1.le(x2)
        bounds = (select(ordered, x1, x2), select(ordered, x2, x1))
    xmin, xmax = bounds
    dtype = x1.hi.dtype
    g1, g2 = Mixed.of_tensor(g1), Mixed.of_tensor(g2)
    d1 = g1 + g2 - 3 * (Mixed.host(f1, dtype) - Mixed.host(f2, dtype)) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = Mixed.of_tensor(jnp.sqrt(jnp.maximum(d2_square.hi, 0)))
    min_pos = select(
        x1.le(x2),
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return select(d2_square.hi >= 0, py_min(py_max(min_pos, xmin), xmax), (xmin + xmax) / 2.0)


def _nonfinite(f, g_max):
    """Whether ``f`` or a gradient with ``max |g| = g_max`` holds a NaN or an infinity (the
    maximum propagates both), sparing a second pass over the gradient."""
    return ~jnp.isfinite(f) | ~jnp.isfinite(g_max)


class _Bracketing(NamedTuple):
    t: Any
    t_prev: Any
    f_prev: Any
    g_prev: Any
    gtd_prev: Any
    f_new: Any
    g_new: Any
    gtd_new: Any
    ls_iter: Any
    evals: Any


class _Zoom(NamedTuple):
    """The bracket's two ends as ``(2,)`` scalars; only the low end's gradient is kept, since
    the high end's is never returned (a new point may become the low end, an old high end
    never does)."""

    bracket: Any
    bracket_f: Any
    bracket_gtd: Any
    low: Any
    g_low: Any
    insuf_progress: Any
    done: Any
    ls_iter: Any
    evals: Any


def _strong_wolfe(evaluate, x, t: Mixed, d, d_norm, f, g, gtd, max_ls):
    """torch's ``_strong_wolfe`` (``d_norm = max |d|``): returns ``(f_new, g_new, t,
    evaluations)``.

    Step lengths and brackets are :class:`~optim_jax.numerics.Mixed`, floats or tensors as in
    torch; losses are floats there, exact in the params' dtype; slopes are tensors.
    """

    def at(step: Mixed):
        f_new, g_new = evaluate(_axpy(step.hi, d, x))  # torch's add_(d, alpha=t): t rounded
        return f_new, g_new, _dot(g_new, d)

    def armijo(step: Mixed):
        """torch's ``f + c1 * t * gtd``: ``c1 * t`` a float or tensor, the rest tensors."""
        return f + (_C1 * step).hi * gtd

    f_new, g_new, gtd_new = at(t)
    zero = Mixed.host(0, t.hi.dtype)  # torch's t_prev = 0
    count = lambda n: jnp.asarray(n, jnp.int32)  # noqa: E731  (loop carries keep one type)
    search = _Bracketing(t, zero, f, g, gtd, f_new, g_new, gtd_new, count(0), count(1))

    def outcome(s: _Bracketing):
        """0 keep extrapolating, 1 bracketed, 2 strong-Wolfe point found."""
        too_high = (s.f_new > armijo(s.t)) | ((s.ls_iter > 1) & (s.f_new >= s.f_prev))
        wolfe = jnp.abs(s.gtd_new) <= -_C2 * gtd
        return jnp.where(too_high, 1, jnp.where(wolfe, 2, jnp.where(s.gtd_new >= 0, 1, 0)))

    def extrapolate(s: _Bracketing) -> _Bracketing:
        t = _cubic_interpolate(s.t_prev, s.f_prev, s.gtd_prev, s.t, s.f_new, s.gtd_new,
                               bounds=(s.t + 0.01 * (s.t - s.t_prev), s.t * 10))
        f_new, g_new, gtd_new = at(t)
        return _Bracketing(t, s.t, s.f_new, s.g_new, s.gtd_new, f_new, g_new, gtd_new,
                           s.ls_iter + 1, s.evals + 1)

    # The test sits in the loop's predicate, so the body evaluates with no branch around it.
    s = jax.lax.while_loop(lambda s: (s.ls_iter < max_ls) & (outcome(s) == 0), extrapolate,
                           search)
    found = jnp.where(s.ls_iter < max_ls, outcome(s), 0)
    exhausted = found == 0  # torch: ``ls_iter == max_ls``, bracket [0, t]
    single = found == 2
    lo_t = select(exhausted, zero, select(single, s.t, s.t_prev))
    lo_f = jnp.where(exhausted, f, jnp.where(single, s.f_new, s.f_prev))
    low = count(jnp.where(lo_f <= s.f_new, 0, 1))
    zoom = _Zoom(
        bracket=numerics.stack([lo_t, s.t]),
        bracket_f=jnp.stack([lo_f, s.f_new]),
        bracket_gtd=jnp.stack([jnp.where(single, s.gtd_new, s.gtd_prev), s.gtd_new]),
        low=low,
        g_low=select((low == 1) | single, s.g_new, select(exhausted, g, s.g_prev)),
        insuf_progress=jnp.zeros([], bool),
        done=single,
        ls_iter=s.ls_iter,
        evals=s.evals,
    )

    def zooming(z: _Zoom) -> _Zoom:
        high = 1 - z.low
        b, bf, bgtd = z.bracket, z.bracket_f, z.bracket_gtd
        b0, b1 = b.at(0), b.at(1)
        top, bottom = py_max(b0, b1), py_min(b0, b1)
        t = _cubic_interpolate(b0, bf[0], bgtd[0], b1, bf[1], bgtd[1])
        eps = 0.1 * (top - bottom)
        near_edge = py_min(top - t, t - bottom).lt(eps)
        move = near_edge & (z.insuf_progress | top.le(t) | t.le(bottom))
        t = select(move, select(abs(t - top).lt(abs(t - bottom)), top - eps, bottom + eps), t)
        f_new, g_new, gtd_new = at(t)
        # torch's branches as selects on the (2,) scalars: a rejected point replaces the high
        # end; an accepted one replaces the low end, which first moves to the high end when
        # the slope says the minimum lies behind it.
        worse = (f_new > armijo(t)) | (f_new >= bf[z.low])
        wolfe = jnp.abs(gtd_new) <= -_C2 * gtd
        shift = ~worse & ~wolfe & (gtd_new * (b.at(high) - b.at(z.low)).hi >= 0)
        slot = jnp.where(worse, high, z.low)

        def put(a, value):
            a = jnp.where(shift, a.at[high].set(a[z.low]), a)
            return a.at[slot].set(value)

        b = select(shift, b.set(high, b.at(z.low)), b).set(slot, t)
        bf, bgtd = put(bf, f_new), put(bgtd, gtd_new)
        low = count(jnp.where(worse, jnp.where(bf[0] <= bf[1], 0, 1), z.low))
        return _Zoom(b, bf, bgtd, low, select(low == slot, g_new, z.g_low),
                     near_edge & ~move, ~worse & wolfe, z.ls_iter + 1, z.evals + 1)

    def zoom_continues(z: _Zoom):
        width = abs(z.bracket.at(1) - z.bracket.at(0)).hi
        narrow = width * d_norm < _LINE_SEARCH_TOLERANCE
        return ~z.done & (z.ls_iter < max_ls) & ~narrow

    z = jax.lax.while_loop(zoom_continues, zooming, zoom)
    return z.bracket_f[z.low], z.g_low, z.bracket.at(z.low), z.evals


def _direction(state: LBFGSState, grad: Params, history_size: int) -> LBFGSState:
    """New search direction ``d`` (two-loop recursion) after recording the last curvature pair.

    The history is updated with masked writes rather than ``lax.cond`` branches: a branch that
    returns the history buffers makes XLA copy them every iteration.
    """
    first = state.n_iter == 1  # torch starts a fresh history, d = -g
    y = jax.tree.map(jnp.subtract, grad, state.prev_flat_grad)
    s = _scale(state.t, state.d)
    ys = _dot(y, s)
    record = (ys > 1e-10) & ~first
    full = state.num_old == history_size
    row = (state.head + jnp.where(full, 0, state.num_old)) % history_size

    def write(buffer, value):
        return buffer.at[row].set(jnp.where(record, value, buffer[row]))

    state = state._replace(
        old_dirs=jax.tree.map(write, state.old_dirs, y),
        old_stps=jax.tree.map(write, state.old_stps, s),
        ro=write(state.ro, 1.0 / ys),
        num_old=jnp.where(first, 0, jnp.where(record & ~full, state.num_old + 1, state.num_old)),
        head=jnp.where(first, 0, jnp.where(record & full, (state.head + 1) % history_size,
                                           state.head)),
        H_diag=jnp.where(first, 1, jnp.where(record, ys / _dot(y, y), state.H_diag)),
    )
    state = state._replace(num_old=state.num_old.astype(jnp.int32),
                           head=state.head.astype(jnp.int32),
                           H_diag=state.H_diag.astype(state.t.dtype))
    rows = lambda i: (state.head + i) % history_size  # noqa: E731  (logical -> ring row)
    pair = lambda buffer, i: jax.tree.map(lambda b: b[rows(i)], buffer)  # noqa: E731
    # Both loops run over the whole ring with the empty rows masked out: a fixed trip count
    # compiles to a faster loop than one bounded by ``num_old`` (about 0.6x the time at n=1000).
    valid = lambda i: i < state.num_old  # noqa: E731

    def backward(k, carry):
        q, al = carry
        i = history_size - 1 - k
        al_i = _dot(pair(state.old_stps, i), q) * state.ro[rows(i)]
        q = select(valid(i), _axpy(-al_i, pair(state.old_dirs, i), q), q)
        return q, al.at[i].set(al_i)

    q, al = jax.lax.fori_loop(0, history_size, backward,
                              (jax.tree.map(jnp.negative, grad), jnp.zeros_like(state.ro)))

    def forward(i, r):
        be_i = _dot(pair(state.old_dirs, i), r) * state.ro[rows(i)]
        return select(valid(i), _axpy(al[i] - be_i, pair(state.old_stps, i), r), r)

    d = jax.lax.fori_loop(0, history_size, forward, _scale(state.H_diag, q))
    return state._replace(d=select(first, jax.tree.map(jnp.negative, grad), d))


class _Iterate(NamedTuple):
    x: Any
    loss: Any
    grad: Any
    state: LBFGSState
    n_iter: Any
    current_evals: Any
    stop: Any


def _learning_rate(lr: Any, dtype: Any) -> Mixed:
    """``lr`` as torch's line search meets it: a Python float, or a tensor lr.

    A concrete array of the params' precision (or less) is torch's tensor lr; a Python number,
    a wider array or a traced value (the stateful classes' hyperparameter vector) is a float,
    to the precision it arrives with.
    """
    narrow = jnp.dtype(jnp.result_type(lr)).itemsize <= jnp.dtype(dtype).itemsize
    if isinstance(lr, (jax.Array, np.ndarray)) and not isinstance(lr, jax.core.Tracer) and narrow:
        return Mixed.of_tensor(jnp.asarray(lr).astype(dtype))
    return Mixed.host(lr, dtype)


def _first_step(grad: Params, lr: Any, dtype: Any) -> Mixed:
    """torch's step length on the very first iteration, ``min(1, 1/|g|_1) * lr``: a tensor
    when ``1/|g|_1 < 1``, else ``lr`` itself.

    Only the first iteration of a step can be the state's first, so this is computed once from
    the step's starting gradient, not in every iteration.
    """
    inverse = (1.0 / _sum_abs(grad)).astype(dtype)
    lr = _learning_rate(lr, dtype)
    return select(inverse < 1.0, Mixed.of_tensor(inverse) * lr, 1.0 * lr)


def _iteration(evaluate: Callable, options: Options,
               first_t: Mixed) -> Callable[[_Iterate], _Iterate]:
    """One pass of the body of torch's ``while n_iter < max_iter`` loop."""
    lr, tolerance_change = options.lr, options.tolerance_change

    def body(it: _Iterate) -> _Iterate:
        n_iter = it.n_iter + 1
        state = it.state._replace(n_iter=it.state.n_iter + 1)
        state = _direction(state, it.grad, options.history_size)
        d, g = state.d, it.grad
        dtype = state.t.dtype
        t = select(state.n_iter == 1, first_t, _learning_rate(lr, dtype))
        state = state._replace(prev_flat_grad=g, prev_loss=it.loss, t=t.hi)
        gtd = _dot(g, d)
        d_max = _max_abs(d)
        ascent = gtd > -tolerance_change

        def move(_):
            if options.line_search_fn == "strong_wolfe":
                loss, grad, step, evals = _strong_wolfe(
                    evaluate, it.x, t, d, d_max, it.loss, g, gtd,
                    options.max_eval - it.current_evals,
                )
            elif evaluate is None:  # the pure update's fixed step: the caller evaluates next
                step, loss, grad, evals = t, it.loss, g, jnp.zeros([], jnp.int32)
            else:
                step = t
                loss, grad = jax.lax.cond(
                    n_iter != options.max_iter,
                    lambda: evaluate(_axpy(t.hi, d, it.x)),
                    lambda: (it.loss, g),
                )
                evals = jnp.where(n_iter != options.max_iter, 1, 0).astype(jnp.int32)
            return loss, grad, step, evals

        loss, grad, step, evals = jax.lax.cond(
            ascent, lambda _: (it.loss, g, t, jnp.zeros([], jnp.int32)), move, None
        )
        g_max = _max_abs(grad)
        bad = ~ascent & _nonfinite(loss, g_max)
        x = select(ascent | bad, it.x, _axpy(step.hi, d, it.x))
        loss, grad = jnp.where(bad, it.loss, loss), select(bad, g, grad)
        current_evals = it.current_evals + evals
        state = state._replace(t=step.hi, func_evals=state.func_evals + evals,
                               nonfinite=state.nonfinite | bad)
        # A bad point stops the step whatever the tests below say, so they may read the
        # rejected gradient's g_max; max |d * step| is max |d| * |step| exactly (rounding is
        # monotone). torch's loss change is float arithmetic (losses are Python floats).
        loss_change = abs(Mixed.host(loss, dtype) - Mixed.host(it.loss, dtype))
        stop = (
            ascent | bad | (n_iter == options.max_iter) | (current_evals >= options.max_eval)
            | (g_max <= options.tolerance_grad)
            | (d_max * jnp.abs(step.hi) <= tolerance_change)
            | loss_change.lt(tolerance_change)
        )
        return _Iterate(x, loss, grad, state, n_iter, current_evals, stop)

    return body


def _objective(fun: Callable[[Params], jax.Array], dtype: Any) -> Callable:
    value_and_grad = jax.value_and_grad(fun)

    def evaluate(x):
        loss, grad = value_and_grad(x)
        if jnp.ndim(loss) != 0:
            raise ValueError(f"the objective must return a scalar, got shape {jnp.shape(loss)}")
        return jnp.asarray(loss, dtype), grad

    return evaluate


def lbfgs_step(
    fun: Callable[[Params], jax.Array], params: Params, state: LBFGSState, **options: Any
) -> tuple[jax.Array, Params, LBFGSState]:
    """torch's ``LBFGS.step(closure)`` as one pure function.

    Evaluates ``fun(params)`` and its gradient, then runs up to ``max_iter`` iterations (at most
    ``max_eval`` evaluations) of L-BFGS, all inside one ``lax.while_loop``.

    Args:
      fun: scalar objective of a parameter pytree.
      params: the starting point.
      state: from :func:`lbfgs`'s ``init`` (or the previous step): history survives steps.
      **options: :func:`lbfgs`'s arguments.

    Returns:
      ``(loss at the start of the step, new params, new state)``, as torch returns the loss
      at the start.
    """
    opts = _options(**{**_DEFAULTS, **options})
    evaluate = _objective(fun, state.t.dtype)
    loss, grad = evaluate(params)
    g_max = _max_abs(grad)
    bad = _nonfinite(loss, g_max)
    state = state._replace(func_evals=state.func_evals + 1, nonfinite=bad)
    start = _Iterate(params, loss, grad, state, jnp.zeros([], jnp.int32), jnp.ones([], jnp.int32),
                     bad | (g_max <= opts.tolerance_grad))
    body = _iteration(evaluate, opts, _first_step(grad, opts.lr, state.t.dtype))
    end = jax.lax.while_loop(lambda it: ~it.stop, body, start)
    return loss, end.x, end.state


_DEFAULTS = dict(lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None)


def lbfgs(
    lr: float = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformationExtraArgs:
    """L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989) with torch.optim.LBFGS's numerics.

    ``update(grads, state, params, value=loss, value_fn=fun)`` performs *one* iteration of
    torch's inner loop from ``params`` (where ``fun`` is ``value`` with gradient ``grads``, or
    ``grad=`` if given):
    it records the last curvature pair, computes the two-loop direction, and steps ``lr`` along
    it (``min(1, 1/|g|_1) * lr`` on the very first iteration) or, with
    ``line_search_fn='strong_wolfe'``, as far as torch's strong-Wolfe search through
    ``value_fn`` goes. For whole solves, :func:`lbfgs_step` runs torch's full ``step`` (up to
    ``max_iter`` iterations) in one compiled loop; ``max_iter``, ``max_eval`` and the tolerances
    only matter there.

    With :math:`s_k = \\theta_{k+1} - \\theta_k`, :math:`y_k = g_{k+1} - g_k` and
    :math:`\\rho_k = 1 / (y_k \\cdot s_k)` (a pair is kept only when
    :math:`y_k \\cdot s_k > 10^{-10}`, the last ``history_size`` of them), and
    :math:`\\gamma = s \\cdot y / y \\cdot y` of the newest pair, the direction is torch's
    two-loop recursion:

    .. math::
        q \\leftarrow -g_t, \\quad \\alpha_i = \\rho_i s_i^\\top q, \\
        q \\leftarrow q - \\alpha_i y_i \\ (\\text{newest to oldest}),

        r \\leftarrow \\gamma q, \\quad \\beta_i = \\rho_i y_i^\\top r, \\
        r \\leftarrow r + (\\alpha_i - \\beta_i) s_i \\ (\\text{oldest to newest}),

        \\theta_{t+1} = \\theta_t + \\tau_t r,

    with :math:`\\tau_t` the ``lr`` (:math:`\\min(1, 1/\\lVert g_1 \\rVert_1)` times it on the
    very first iteration) or the strong-Wolfe step.

    Args:
      lr: step length multiplier.
      max_iter: iterations per :func:`lbfgs_step`.
      max_eval: evaluations per step (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when ``max |g| <= tolerance_grad``.
      tolerance_change: stop when the step or the loss change is below it.
      history_size: curvature pairs kept.
      line_search_fn: ``None`` (fixed step) or ``'strong_wolfe'``.

    Returns:
      A transform whose state is :class:`LBFGSState`, its vectors shaped like the params.

    References:
      Nocedal, `Updating Quasi-Newton Matrices with Limited Storage
      <https://doi.org/10.1090/S0025-5718-1980-0572855-7>`_, Mathematics of Computation 35,
      1980.

      Liu & Nocedal, `On the limited memory BFGS method for large scale optimization
      <https://doi.org/10.1007/BF01589116>`_, Mathematical Programming 45, 1989.
    """
    opts = _options(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
                    line_search_fn)

    def init(params):
        return place_state(init_state(params, history_size), params)

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None,
               **extra_args):
        del extra_args
        if params is None or value is None:
            raise ValueError("lbfgs.update needs params and value= (the loss at params)")
        if line_search_fn == "strong_wolfe" and value_fn is None:
            raise ValueError("line_search_fn='strong_wolfe' needs value_fn= (params -> loss)")
        grad = updates if grad is None else grad
        dtype = state.t.dtype
        evaluate = _objective(value_fn, dtype) if value_fn else None
        # One iteration as torch's first of a step: the line search may spend max_eval - 1
        # evaluations, and no evaluation follows a fixed step (the caller makes the next one).
        one = opts._replace(max_iter=1)
        it = _iteration(evaluate, one, _first_step(grad, lr, dtype))(
            _Iterate(params, jnp.asarray(value, dtype), grad, state, jnp.zeros([], jnp.int32),
                     jnp.ones([], jnp.int32), jnp.zeros([], bool))
        )
        return jax.tree.map(jnp.subtract, it.x, params), it.state

    return GradientTransformationExtraArgs(init, update)
