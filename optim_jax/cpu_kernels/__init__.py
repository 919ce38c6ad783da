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
_SYMBOLS = {ADAM: "OptimJaxAdamF32", SGD: "OptimJaxSgdF32"}


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


def call(target: str, inputs: list[jax.Array], terms: jax.Array, outputs: int) -> tuple:
    """Traced: the kernel ``target`` over ``inputs`` (1-D float32 buffers of one length, param
    first) and the step's scalars ``terms``; it writes its ``outputs`` (the param, then the
    state buffers) in place of the param and of the inputs after the gradient."""
    shape = jax.ShapeDtypeStruct(inputs[0].shape, inputs[0].dtype)
    aliases = {0: 0, **{2 + k: 1 + k for k in range(outputs - 1)}}
    return tuple(jax.ffi.ffi_call(target, (shape,) * outputs, input_output_aliases=aliases)(
        *inputs, terms))
