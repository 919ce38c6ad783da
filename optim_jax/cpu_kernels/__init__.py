"""optim_jax's own CPU kernels, called through ``jax.ffi``: one-pass optimizer steps.

XLA's CPU backend writes each output of an elementwise update in a loop of its own, so an Adam
step over float32 moves ~40 bytes per parameter where one pass moves 28 (read param, gradient
and both moments; write param and moments in place). ``fused_steps.cc`` holds that one pass
for Adam/AdamW and SGD with momentum. ``pip install`` compiles it (``setup.py``) when a C++
compiler and jaxlib's FFI headers are at hand; where it is not built, or where
``OPTIM_JAX_CPU_KERNELS=0`` is set, :func:`available` is ``False`` and the plain XLA path is
used, with the same results: each kernel is bit-identical to XLA's program of the same step
(:mod:`optim_jax.fused` checks this at first use).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import pathlib

import jax

ADAM = "optim_jax_adam_f32"
SGD = "optim_jax_sgd_f32"
# The same steps over one buffer per column, the gradients given as segments (call_segments).
SEGMENTS = {ADAM: "optim_jax_adam_segments_f32", SGD: "optim_jax_sgd_segments_f32"}
_SYMBOLS = {ADAM: "OptimJaxAdamF32", SGD: "OptimJaxSgdF32",
            SEGMENTS[ADAM]: "OptimJaxAdamSegmentsF32", SEGMENTS[SGD]: "OptimJaxSgdSegmentsF32"}


def library_path() -> pathlib.Path | None:
    """Where the built kernels are, or ``None`` when they were not built."""
    here = pathlib.Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_fused_steps{suffix}"
        if path.exists():
            return path
    return None


@functools.cache
def available() -> bool:
    """Whether the kernels are built, enabled and registered with XLA for the CPU.

    ``OPTIM_JAX_CPU_KERNELS=0`` in the environment (read once, at the first call) keeps every
    step on XLA's own path.
    """
    if os.environ.get("OPTIM_JAX_CPU_KERNELS", "1") == "0":
        return False
    path = library_path()
    if path is None:
        return False
    try:
        library = ctypes.CDLL(str(path))
        for target, symbol in _SYMBOLS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (OSError, AttributeError, RuntimeError, ValueError):
        return False
    return True


def call(target: str, columns: list[list[jax.Array]], terms: jax.Array) -> list[list[jax.Array]]:
    """Traced: one call of the kernel ``target`` over a step's arrays, column by column.

    Args:
      target: :data:`ADAM` or :data:`SGD`.
      columns: the params, the gradients, then each state field the kernel reads: lists of
        float32 arrays of one length each, ``columns[c][b]`` of the shape of ``columns[0][b]``.
      terms: the step's scalars, as the kernel reads them (more may follow, not read).

    Returns:
      The new params, then each new state field, column by column; each written in place of
      its input (the caller donates them).
    """
    count = len(columns[0])
    kept = [0, *range(2, len(columns))]  # the gradient column is read, not written
    results = [jax.ShapeDtypeStruct(x.shape, x.dtype) for c in kept for x in columns[c]]
    aliases = {1 + c * count + b: k * count + b for k, c in enumerate(kept) for b in range(count)}
    flat = jax.ffi.ffi_call(target, results, input_output_aliases=aliases)(
        terms, *(x for column in columns for x in column))
    return [list(flat[k * count:(k + 1) * count]) for k in range(len(kept))]


def call_segments(target: str, whole: list[jax.Array], grads: list[jax.Array],
                  terms: jax.Array) -> list[jax.Array]:
    """Traced: one call of the kernel ``target`` over one buffer per column, its
    gradient given in segments (the leaves of a contiguous group, unconcatenated).

    Args:
      target: :data:`ADAM` or :data:`SGD`.
      whole: the params' buffer, then each state field's: float32, 1-D, of one length.
      grads: float32 gradient segments, 1-D, laid end to end from the buffers' first element.
      terms: the step's scalars, as the kernel reads them (more may follow, not read).

    Returns:
      The params' buffer and each state field's, stepped where the segments lie; written in
      place of ``whole`` (the caller donates them).
    """
    results = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in whole]
    aliases = {1 + k: k for k in range(len(whole))}
    return list(jax.ffi.ffi_call(SEGMENTS[target], results, input_output_aliases=aliases)(
        terms, *whole, *grads))
