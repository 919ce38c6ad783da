"""Builds optim_jax's CPU kernels (optim_jax/cpu_kernels/fused_steps.cc) when it can.

Everything else is in pyproject.toml. The kernels are optional: without a C++ compiler, or if
the build fails, the package installs without them and every step takes XLA's own path (with
the same results; see optim_jax/cpu_kernels/__init__.py).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that adds jaxlib's FFI headers and turns a failed build into a warning."""

    def build_extension(self, ext):
        try:
            import jaxlib  # jax.ffi.include_dir(), without importing jax (not in the build env)

            ext.include_dirs.append(os.path.join(os.path.dirname(jaxlib.__file__), "include"))
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 - any failure leaves XLA's path in place
            print(f"optim_jax: the CPU kernels were not built ({error}); steps use XLA's path",
                  file=sys.stderr)

    def build_extensions(self):
        # -march=native: the kernels are built for the machine that installs them, as XLA
        # compiles for the machine it runs on; -ffp-contract=off: no multiply-adds beyond the
        # ones the source writes, so the results match XLA's bit for bit.
        flags = ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-w"]
        native = ["-march=native"] if self.compiler.compiler_type == "unix" else []
        for ext in self.extensions:
            ext.extra_compile_args = flags + native
        super().build_extensions()  # each build_extension turns its own failure into a warning


setup(
    ext_modules=[Extension(
        "optim_jax.cpu_kernels._fused_steps",
        sources=["optim_jax/cpu_kernels/fused_steps.cc"],
        language="c++",
        optional=True,
    )],
    cmdclass={"build_ext": OptionalBuildExt},
)
