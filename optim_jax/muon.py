"""Muon (Jordan et al., 2024): momentum orthogonalised by a Newton-Schulz iteration, as
torch.optim.Muon (torch 2.13) computes it, for 2-d parameters.

torch runs the Newton-Schulz iteration in **bfloat16** whatever the parameter's dtype: the
update is rounded to bfloat16 (through float32), each matrix product is accumulated in float32
and rounded to bfloat16 once, ``addmm``'s ``beta * C`` term joins the scaled product in a fused
multiply-add, and the bfloat16 result is added to the float32/float64 parameter. This module
does the same, operation for operation, so the bfloat16 results are bit-identical to torch's
(tested on CPU) as long as the float32 sums inside the products agree: they do for inner
dimensions up to about 32 (XLA and torch's CPU kernels then add in the same order). For larger
matrices the summation orders differ, an element occasionally rounds to the neighbouring
bfloat16 value, and the iteration carries that on: expect agreement to bfloat16 precision
(about 1e-2 relative on the orthogonalised update), not to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax import blocks, numerics, validation
from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optim_jax.combine import chain

EPS = 1e-7
DEFAULT_A = 3.4445
DEFAULT_B = -4.7750
DEFAULT_C = 2.0315
DEFAULT_NS_STEPS = 5


class MuonState(NamedTuple):
    """torch's Muon state: the momentum buffer only (torch keeps no step count).

    Attributes:
      momentum_buffer: :math:`B_t`, the moving average of the gradients, shaped like the params.
    """

    momentum_buffer: Any


def trace_muon_momentum(momentum: Any = 0.95, nesterov: bool = True) -> GradientTransformation:
    """Muon's momentum: an exponential moving average of the gradients.

    .. math::
        B_t = \\operatorname{lerp}(B_{t-1}, g_t, 1 - \\mu), \\quad
        u_t = \\operatorname{lerp}(g_t, B_t, \\mu) \\ (\\text{nesterov}) \\ \\text{or} \\ B_t

    with :math:`B_0 = 0` (torch's ``buf.lerp_(grad, 1 - momentum)`` and
    ``grad.lerp(buf, momentum)``).

    Args:
      momentum: :math:`\\mu`, the weight of the past in the average.
      nesterov: emit the look-ahead :math:`\\operatorname{lerp}(g_t, B_t, \\mu)` instead of
        :math:`B_t`.

    Returns:
      The transform; its state is a :class:`MuonState`.
    """

    def init(params):
        return MuonState(jax.tree.map(numerics.zeros_like, params))

    def update(updates, state, params=None):
        del params
        buffers = jax.tree.map(
            lambda b, g: numerics.lerp(b, g, 1 - momentum), state.momentum_buffer, updates
        )
        if nesterov:
            updates = jax.tree.map(lambda g, b: numerics.lerp(g, b, momentum), updates, buffers)
        else:
            updates = buffers
        return updates, MuonState(buffers)

    return GradientTransformation(init, update)


def zeropower_via_newtonschulz(
    grad: jax.Array, ns_coefficients: tuple[Any, Any, Any], ns_steps: int, eps: Any
) -> jax.Array:
    """torch's ``_zeropower_via_newtonschulz``: an approximate orthogonalisation of a matrix.

    .. math::
        X_0 = \\frac{G}{\\max(\\|G\\|_F, \\epsilon)}, \\quad A_k = X_k X_k^\\top, \\quad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

    on :math:`G^\\top` when :math:`G` has more rows than columns, in bfloat16 with float32
    accumulation and one rounding per product, as torch does.

    Args:
      grad: a 2-d array of any float dtype.
      ns_coefficients: :math:`(a, b, c)`.
      ns_steps: the number of iterations (a Python int).
      eps: :math:`\\epsilon`, the floor of the norm.

    Returns:
      The bfloat16 result, shaped like ``grad``.
    """
    a, b, c = ns_coefficients
    bf16, f32 = jnp.bfloat16, jnp.float32
    # torch converts float64 to bfloat16 through float32 (c10::BFloat16 is built from a float)
    x = grad.astype(f32).astype(bf16)
    transpose = grad.shape[0] > grad.shape[1]
    if transpose:
        x = x.T
    # ortho_grad.div_(ortho_grad.norm().clamp(min=eps)), all in bfloat16
    x = (x.astype(f32) / jnp.maximum(blocks.norm(x), _bf16(eps)).astype(f32)).astype(bf16)

    def dot(p, q):
        return jnp.matmul(p, q, precision=jax.lax.Precision.HIGHEST)

    for _ in range(ns_steps):
        xf = x.astype(f32)
        gram = dot(xf, xf.T).astype(bf16).astype(f32)
        # addmm(gram, gram, gram, beta=b, alpha=c): torch's kernel scales the float32 product
        # by alpha, adds beta * C in one fused multiply-add and rounds to bfloat16 once
        gram_update = _fma(b, gram, _f32(c) * dot(gram, gram)).astype(bf16).astype(f32)
        x = _fma(a, xf, dot(gram_update, xf)).astype(bf16)  # addmm(x, gram_update, x, beta=a)
    return x.T if transpose else x


def _f32(value: Any) -> Any:
    """A hyperparameter as torch's bfloat16 kernels see it: in float32 (their opmath type)."""
    return value if isinstance(value, (int, float)) else jnp.asarray(value).astype(jnp.float32)


def _fma(scale: Any, x: jax.Array, addend: jax.Array) -> jax.Array:
    """``scale * x + addend`` rounded to float32 once, as a fused multiply-add rounds it.

    ``x`` holds bfloat16 values (8 significant bits). ``scale`` (24 bits) is split into a high
    part of 16 bits and a low part of 8, so both partial products are exact in float32; the sum
    is then formed with an error-free TwoSum, leaving one final rounding. (A plain
    ``scale * x + addend`` rounds twice; on an exact bfloat16 tie torch's result then differs.)
    """
    scale = jnp.asarray(scale).astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(scale, jnp.uint32) & jnp.uint32(0xFFFFFF00)
    scale_high = jax.lax.bitcast_convert_type(bits, jnp.float32)
    high, low = scale_high * x, (scale - scale_high) * x  # both exact
    total = high + addend
    virtual = total - high
    error = (high - (total - virtual)) + (addend - virtual)  # total + error == high + addend
    return total + (error + low)


def _bf16(value: Any) -> jax.Array:
    return jnp.asarray(value).astype(jnp.float32).astype(jnp.bfloat16)


def adjusted_lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """torch's ``_adjust_lr`` factor for a parameter of ``shape`` ``(A, B)``:
    :math:`\\sqrt{\\max(1, A/B)}` (``'original'``, the default) or
    :math:`0.2\\sqrt{\\max(A, B)}` (``'match_rms_adamw'``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def scale_by_newton_schulz(
    ns_coefficients: tuple[Any, Any, Any] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
    ns_steps: int = DEFAULT_NS_STEPS,
    eps: Any = EPS,
    adjust_lr_fn: str | None = None,
    *,
    lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """Muon's orthogonalisation: ``u -> r(shape) * NS(u)`` for each 2-d update.

    Each update is orthogonalised by :func:`zeropower_via_newtonschulz` (in bfloat16, as
    torch), cast back to its dtype and scaled by :func:`adjusted_lr_ratio`, Muon's
    shape-dependent learning-rate factor :math:`r`.

    Args:
      ns_coefficients: :math:`(a, b, c)` of the quintic Newton-Schulz iteration.
      ns_steps: the number of iterations (a Python int).
      eps: :math:`\\epsilon`, the floor of the Frobenius norm the update is divided by.
      adjust_lr_fn: ``None``/``'original'`` (:math:`r = \\sqrt{\\max(1, A/B)}` for an
        :math:`A \\times B` update) or ``'match_rms_adamw'`` (:math:`r = 0.2\\sqrt{\\max(A, B)}`).
      lr: if given (a float, array or schedule), the block emits the step
        :math:`-\\gamma r \\, \\mathrm{NS}(u)` itself, with torch's ``adjusted_lr = lr * r``
        formed as torch forms it (in ``lr``'s dtype for an array, torch's tensor lr).

    Returns:
      A stateless transform (its state is ``EmptyState()``; a :class:`~optim_jax.ScheduleState`
      for a scheduled ``lr``).
    """

    def build(lr):
        def one(u):
            ortho = zeropower_via_newtonschulz(u, ns_coefficients, ns_steps, eps).astype(u.dtype)
            # torch's add_(update, alpha=-adjusted_lr); without lr, the ratio alone
            scale = numerics.step_scale(lr, None, 1.0, adjusted_lr_ratio(u.shape, adjust_lr_fn))
            return ortho * numerics.like(scale, u)

        return blocks.stateless(lambda updates, params: jax.tree.map(one, updates))

    return blocks.scheduled(build, lr)


def _check_matrices(params: Any) -> None:
    for leaf in jax.tree.leaves(params):
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"torch.Size({list(jnp.shape(leaf))})"
            )
    validation.reject_complex(params, "Muon does not support complex parameters")


def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
    eps: float = EPS,
    ns_steps: int = DEFAULT_NS_STEPS,
    adjust_lr_fn: str | None = None,
) -> GradientTransformationExtraArgs:
    """Muon for 2-d parameters: Nesterov momentum, orthogonalised, with decoupled weight decay.

    .. math::
        B_t = \\mu B_{t-1} + (1 - \\mu) g_t, \\quad
        \\tilde B_t = \\operatorname{lerp}(g_t, B_t, \\mu) \\ (\\text{nesterov}) \\
            \\text{or} \\ B_t,

        \\theta_t = \\theta_{t-1} - \\gamma \\lambda \\theta_{t-1}
            - \\gamma\\, r(A, B)\\, \\mathrm{NS}^{(a,b,c)}_k(\\tilde B_t; \\epsilon)

    with :math:`r` the ``adjust_lr_fn`` ratio for an :math:`A \\times B` parameter
    (:func:`adjusted_lr_ratio`) and :math:`\\mathrm{NS}` :func:`zeropower_via_newtonschulz`
    (bfloat16, as in torch).

    Args:
      lr: learning rate :math:`\\gamma`, a float or a schedule ``step -> lr``.
      weight_decay: decoupled weight decay :math:`\\lambda`.
      momentum: :math:`\\mu`.
      nesterov: use the Nesterov look-ahead :math:`\\operatorname{lerp}(g_t, B_t, \\mu)`.
      ns_coefficients: :math:`(a, b, c)` of the quintic Newton-Schulz polynomial.
      eps: :math:`\\epsilon`, the floor of the Frobenius norm the update is divided by.
      ns_steps: :math:`k`, the number of Newton-Schulz iterations (fewer than 100).
      adjust_lr_fn: ``None``/``'original'`` (:math:`\\sqrt{\\max(1, A/B)}`) or
        ``'match_rms_adamw'`` (:math:`0.2\\sqrt{\\max(A, B)}`).

    Returns:
      The transform; its state holds torch's ``momentum_buffer``. ``init`` raises torch's
      ``ValueError`` for a parameter that is not 2-d, and its ``RuntimeError`` for complex
      ones. torch checks ``ns_steps`` and ``ns_coefficients`` at its first step; here they are
      checked when the transform is built, with torch's messages.

    References:
      Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, `Muon: An optimizer for hidden
      layers in neural networks <https://kellerjordan.github.io/posts/muon/>`_, 2024.

      Liu et al., `Muon is Scalable for LLM Training <https://arxiv.org/abs/2502.16982>`_, 2025
      (``adjust_lr_fn='match_rms_adamw'``).
    """
    validation.check_lr_size(lr)
    validation.require(lambda v: v >= 0.0, lr, f"Learning rate should be >= 0 but is: {lr}",
                        schedule=True)
    validation.require(lambda v: v >= 0.0, momentum, f"momentum should be >= 0 but is: {momentum}")
    validation.require(
        lambda v: v >= 0.0, weight_decay, f"weight decay should be >= 0 but is: {weight_decay}"
    )
    if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    momentum_block = trace_muon_momentum(momentum, nesterov)

    def init(params):
        _check_matrices(params)
        return momentum_block.init(params)

    core = chain(
        GradientTransformation(init, momentum_block.update),
        scale_by_newton_schulz(ns_coefficients, ns_steps, eps, adjust_lr_fn, lr=lr),
    )
    # theta <- theta * (1 - lr * weight_decay) - lr * r * NS(...)
    return blocks.descent(
        core, lr, weight_decay, decoupled_weight_decay=True, lr_in_core=True
    )
