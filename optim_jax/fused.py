"""One-pass steps on the CPU: Adam, AdamW and SGD with momentum through optim_jax's own kernels.

XLA's CPU backend writes each output of an elementwise update in a separate loop, so an Adam
step moves the moments through memory more than once (measured: ~40 bytes per float32
parameter where one pass moves 28; ``benchmarks/bench_step.py``). :func:`fused_update` takes a
step the way the stateful optimizers apply it (the transform's update, then ``params +
updates``) and, where a kernel of :mod:`optim_jax.cpu_kernels` covers it, runs it in one pass
over the arrays instead, in kernel calls of up to :data:`MAX_ARRAYS` arrays each,
bit-identical to XLA's program. Over a contiguous group's buffers the kernel reads each leaf's
gradient where it lies (``grad_parts``: one call per buffer over all its gradient segments,
in place), so the gradients are never concatenated. It needs:

- the kernels built and enabled (:func:`optim_jax.cpu_kernels.available`), a CPU lowering
  (other platforms keep XLA's path: GPU and TPU fuse the outputs themselves), float32 params,
  gradients and state, per-step scalars in float32 (``jax_enable_x64`` off), arrays on one
  device and at least :data:`MIN_SIZE` elements in all (a group's buffers, or a tree);
- ``adam`` / ``adamw`` without AMSGrad, or ``sgd`` with momentum, learning rates that are
  numbers (not schedules); every other option is covered (``maximize``, L2 or decoupled weight
  decay, dampening, Nesterov).

Everything else, and any configuration whose kernel did not reproduce XLA's results bit for bit
at its first use in the process (a jaxlib that contracts differently, a CPU without FMA), takes
XLA's path.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optim_jax import blocks, cpu_kernels, numerics
from optim_jax.adam import adam, inverse_bias_correction_sqrt
from optim_jax.adamw import adamw
from optim_jax.base import apply_updates
from optim_jax.sgd import sgd
from optim_jax.state_fields import collect_fields, replace_fields


# Steps over fewer elements than this in all keep XLA's path: there a step costs about its
# dispatch, whichever path it takes, and the kernel's check at first use would not repay.
MIN_SIZE = 1 << 14
# Arrays per kernel call, at most: XLA's compile time grows with the square of one call's
# aliased operands (measured: a tree of 400 arrays compiled in 5.1 s in one call, 2.4 s by
# XLA's path), and a call's own cost is a few microseconds.
MAX_ARRAYS = 32
# A group whose steps a kernel takes keeps leaves of up to this many elements in its shared
# buffers (the kernel reads their gradients unconcatenated). Past it a leaf keeps a buffer of
# its own: a closure reads the params through views of the buffers, which XLA may copy before
# a matmul (8 bytes per element, ~0.2 ns at ~40 GB/s), and around 1e5 elements that copy costs
# what the leaf's 6 to 8 arrays crossing the jit boundary (~3 us each) save.
SHARED_UP_TO = 1 << 17


class Kernel(NamedTuple):
    """One kernel's use for one pure factory.

    Attributes:
      factory: the pure factory whose step the kernel takes.
      target: the FFI target name.
      fields: the per-parameter state fields it reads and writes, in its argument order.
      terms: ``(options, step, like) -> float32 terms`` (traced): the per-step scalars the
        kernel takes, ``like`` a leaf of the params' dtype.
      accepts: ``options -> bool``, whether the kernel covers options of this kind.
    """

    factory: Callable
    target: str
    fields: tuple[str, ...]
    terms: Callable[[dict, jax.Array, jax.Array], jax.Array]
    accepts: Callable[[dict], bool]


def _sign_and_l2(options: dict, like: jax.Array, decoupled: bool) -> tuple[Any, Any, int]:
    weight_decay = options.get("weight_decay", 0.0)
    l2 = not numerics.is_static_zero(weight_decay) and not decoupled
    sign = -1.0 if options.get("maximize", False) else 1.0
    return sign, numerics.like(weight_decay, like) if l2 else 0.0, int(l2)


def _adam_terms(always_decoupled: bool) -> Callable:
    def terms(options, step, like):
        lr, (beta1, beta2), eps = options["lr"], options["betas"], options["eps"]
        weight_decay = options.get("weight_decay", 0.0)
        decoupled = always_decoupled or options.get("decoupled_weight_decay", False)
        sign, l2, flags = _sign_and_l2(options, like, decoupled)
        count = numerics.increment(step)
        scale = numerics.step_scale(lr, step, numerics.bias_correction(beta1, count))
        from_m, coef = numerics.lerp_terms(numerics.like(1 - beta1, like))
        decay = decoupled and not numerics.is_static_zero(weight_decay)
        decay_m1 = (jnp.asarray(numerics.decay_factor(lr, weight_decay)).astype(like.dtype) - 1
                    if decay else 0.0)
        return _stack(
            sign, l2, from_m, coef, numerics.like(beta2, like), numerics.like(1 - beta2, like),
            inverse_bias_correction_sqrt(beta2, count),
            numerics.like(eps, like), numerics.like(scale, like), decay_m1,
            flags + 2 * int(decay),
        )

    return terms


def _sgd_terms(options, step, like):
    sign, l2, flags = _sign_and_l2(options, like, decoupled=False)
    momentum = options["momentum"]
    decay, keep = blocks.momentum_terms(step, momentum, options.get("dampening", 0.0))
    return _stack(sign, l2, numerics.like(decay, like), numerics.like(keep, like),
                  numerics.like(momentum, like), numerics.like(-options["lr"], like),
                  flags + 2 * int(options.get("nesterov", False)))


def _stack(*terms: Any) -> jax.Array:
    return jnp.stack([jnp.asarray(t).astype(jnp.float32) for t in terms])


def _adam_accepts(options: dict) -> bool:
    return not options.get("amsgrad") and not callable(options.get("lr"))


def _sgd_accepts(options: dict) -> bool:
    momentum = options.get("momentum", 0.0)
    return not numerics.is_static_zero(momentum) and not callable(options.get("lr"))


KERNELS = (
    Kernel(adam, cpu_kernels.ADAM, ("exp_avg", "exp_avg_sq"), _adam_terms(False), _adam_accepts),
    Kernel(adamw, cpu_kernels.ADAM, ("exp_avg", "exp_avg_sq"), _adam_terms(True), _adam_accepts),
    Kernel(sgd, cpu_kernels.SGD, ("momentum_buffer",), _sgd_terms, _sgd_accepts),
)


def expected(factory: Callable, options: dict, params: Any) -> bool:
    """Whether a kernel is expected to take the steps of ``factory(**options)`` over
    ``params``, judged before any step: the kernels available, one covering these options,
    float32 arrays on one CPU device, float32 scalars. (The first-use check and the options a
    step finally has decide; a wrong guess costs speed, never results.)"""
    leaves = jax.tree.leaves(params)
    devices = {d for leaf in leaves for d in getattr(leaf, "devices", lambda: set())()}
    return (cpu_kernels.available() and numerics.scalar_dtype() == jnp.float32
            and kernel_for(factory, options) is not None and len(devices) == 1
            and next(iter(devices)).platform == "cpu"
            and all(leaf.dtype == jnp.float32 for leaf in leaves))


def kernel_for(factory: Callable, options: dict) -> Kernel | None:
    """The kernel covering ``factory(**options)``'s step, or ``None``."""
    for kernel in KERNELS:
        if kernel.factory is factory and kernel.accepts(options):
            return kernel
    return None


def fused_update(
    factory: Callable, options: dict, params: Any, grads: Any, state: Any,
    xla_update: Callable[[], tuple[Any, Any]], grad_parts: dict | None = None,
    after: Any = None,
) -> tuple[Any, Any]:
    """Traced: ``(new params, new state)`` of one step of ``factory(**options)``.

    Args:
      factory: the pure factory (``adam``, ``adamw``, ``sgd``, ...).
      options: its arguments as the step has them (numbers traced, statics as given).
      params: the params (a tree, or a group's buffers), on one device.
      grads: their gradients, in the params' dtypes.
      state: the transform's state over ``params``.
      xla_update: ``() -> (new params, new state)`` by XLA's path: the transform's update and
        ``apply_updates``.
      grad_parts: for buffers, optionally the gradient unconcatenated: per buffer, the 1-D
        gradients of the leaves it holds, in order. The kernel then reads them in place of
        ``grads``, whose concatenation XLA drops as unused (one pass over the gradient saved).
        Each buffer is stepped by one call over all its segments: a chain of calls over one
        buffer would make XLA copy the buffer before the first (measured, Adam
        ``step(closure)`` on 64 leaves x 100k: 17.1 ms chained by 32 against 6.8 ms).
      after: a value computed from ``params`` in the same program (a closure's loss), which
        the kernel calls then wait for. A call updates ``params`` in place, and XLA orders it
        after their other readers by data alone: where some readers do not feed the call
        (the loss's own terms), XLA copies ``params`` first, and on many small leaves its
        executor also slows (measured, Adam ``step(closure)`` on 1000 leaves x 1k: 14.5 ms
        without, 8.1 ms with).

    Returns:
      The kernel's results on a CPU where one covers the step, else ``xla_update()``'s.
    """
    kernel = kernel_for(factory, options)
    leaves, treedef = jax.tree.flatten(params)
    if kernel is None or not _covered(kernel, options, leaves, grads, state, treedef):
        return xla_update()
    if grad_parts is not None:
        kernel_update = functools.partial(_segmented_update, kernel, options, params, grad_parts,
                                          after)
    else:
        kernel_update = functools.partial(_kernel_update, kernel, options, params, grads, after)
    return jax.lax.platform_dependent(cpu=lambda: kernel_update(state), default=xla_update)


def _covered(kernel: Kernel, options: dict, leaves: list, grads: Any, state: Any,
             treedef: Any) -> bool:
    if not cpu_kernels.available() or numerics.scalar_dtype() != jnp.float32:
        return False
    if not leaves or any(leaf.dtype != jnp.float32 for leaf in leaves + jax.tree.leaves(grads)):
        return False
    if sum(leaf.size for leaf in leaves) < MIN_SIZE:
        return False
    fields = collect_fields(state, treedef)
    if sorted(name for name, _ in fields) != sorted(("step",) + kernel.fields):
        return False
    fields = dict(fields)
    if any(x.dtype != jnp.float32 for f in kernel.fields for x in jax.tree.leaves(fields[f])):
        return False
    return _verified(kernel, _static_key(options))


def _terms(kernel: Kernel, options: dict, step: jax.Array, like: jax.Array,
           after: Any) -> jax.Array:
    """The kernel's terms; ``after`` appended (the kernel reads only its own), so that every
    call taking them waits for it."""
    terms = kernel.terms(options, step, like)
    if after is None:
        return terms
    return jnp.concatenate([terms, jnp.reshape(after, (1,)).astype(terms.dtype)])


def _kernel_update(kernel: Kernel, options: dict, params: Any, grads: Any, after: Any,
                   state: Any) -> tuple[Any, Any]:
    treedef = jax.tree.structure(params)
    fields = collect_fields(state, treedef)
    values = dict(fields)
    leaves = treedef.flatten_up_to(params)
    terms = _terms(kernel, options, values["step"], leaves[0], after)
    columns = [leaves, treedef.flatten_up_to(grads),
               *(treedef.flatten_up_to(values[name]) for name in kernel.fields)]
    new_params, *new_buffers = [[] for _ in range(1 + len(kernel.fields))]
    for start in range(0, len(leaves), MAX_ARRAYS):
        outputs = cpu_kernels.call(kernel.target, [c[start:start + MAX_ARRAYS] for c in columns],
                                   terms)
        for column, part in zip([new_params, *new_buffers], outputs):
            column.extend(part)
    new_values = {"step": numerics.increment(values["step"]),
                  **{name: treedef.unflatten(column)
                     for name, column in zip(kernel.fields, new_buffers)}}
    new_state = replace_fields(state, treedef, [new_values[name] for name, _ in fields])
    return treedef.unflatten(new_params), new_state


def _segmented_update(kernel: Kernel, options: dict, buffers: dict, grad_parts: dict,
                      after: Any, state: Any) -> tuple[Any, Any]:
    """:func:`_kernel_update` over a group's buffers, each gradient read in segments: one
    call per buffer."""
    treedef = jax.tree.structure(buffers)
    fields = collect_fields(state, treedef)
    values = dict(fields)
    columns = [treedef.flatten_up_to(buffers),
               *(treedef.flatten_up_to(values[name]) for name in kernel.fields)]
    terms = _terms(kernel, options, values["step"], columns[0][0], after)
    rows = [cpu_kernels.call_segments(kernel.target, list(whole), parts, terms)
            for whole, parts in zip(zip(*columns), treedef.flatten_up_to(grad_parts))]
    new_params, *new_fields = (treedef.unflatten(column) for column in zip(*rows))
    new_values = {"step": numerics.increment(values["step"]),
                  **dict(zip(kernel.fields, new_fields))}
    return new_params, replace_fields(state, treedef, [new_values[name] for name, _ in fields])


def _static_key(options: dict) -> tuple:
    """What of the options the kernel's code path depends on (statics, and which are zero)."""
    return tuple(sorted(
        (name, value if isinstance(value, (bool, str, type(None)))
         else ("zero" if numerics.is_static_zero(value) else "number"))
        for name, value in options.items()
    ))


@functools.lru_cache(maxsize=None)
def _verified(kernel: Kernel, static_key: tuple) -> bool:
    """Whether the kernel reproduces XLA's path bit for bit for options of this kind, over
    three steps on random data on the CPU (once per process and kind of options; run while a
    step is traced, so evaluated eagerly)."""
    try:
        with jax.ensure_compile_time_eval(), jax.default_device(jax.devices("cpu")[0]):
            return _compare(kernel, static_key)
    except Exception:  # noqa: BLE001 - a kernel that cannot even run here is not used
        return False


def _compare(kernel: Kernel, static_key: tuple) -> bool:
    statics = {name: value for name, value in static_key if value not in ("zero", "number")}
    zeros = {name: 0.0 for name, value in static_key if value == "zero"}
    traced = [name for name, value in static_key if value == "number"]
    sample = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1,
              "momentum": 0.9, "dampening": 0.0 if statics.get("nesterov") else 0.1}
    values = [jax.tree.map(jnp.float32, sample[name]) for name in traced]
    size = 4099  # odd, so that vector loops and their remainders both run
    params = {"a": jnp.asarray(np.random.default_rng(0).standard_normal(size), jnp.float32)}
    grads = [{"a": jnp.asarray(np.random.default_rng(k).standard_normal(size), jnp.float32)}
             for k in range(1, 4)]

    cuts = np.linspace(0, size, 41).astype(int)  # 40 segments in one call

    def step(path, params, grads, state, values):
        options = {**statics, **zeros, **dict(zip(traced, values))}
        if path == "kernel":
            return _kernel_update(kernel, options, params, grads, None, state)
        if path == "segments":  # waiting for a value, as a closure's step does
            parts = {"a": [grads["a"][lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]}
            return _segmented_update(kernel, options, params, parts, jnp.sum(params["a"]), state)
        updates, new_state = kernel.factory(**options).update(grads, state, params)
        return apply_updates(params, updates), new_state

    histories = []
    for path in ("kernel", "segments", "xla"):
        run = jax.jit(functools.partial(step, path))
        p = params
        state = kernel.factory(**statics, **zeros, **{n: sample[n] for n in traced}).init(p)
        history = []
        for g in grads:
            p, state = run(p, g, state, values)
            history.extend(jax.tree.leaves((p, state)))
        histories.append(history)
    return all(np.array_equal(np.asarray(a), np.asarray(b))
               for history in histories[:-1] for a, b in zip(history, histories[-1]))
