"""Pure learning-rate schedules: torch.optim.lr_scheduler as jittable functions ``step -> lr``.

Every torch scheduler with a closed or recursive form has a function here, named in snake_case
with torch's argument names and defaults, the optimizer replaced by the group's base learning
rate: ``StepLR(opt, step_size=30, gamma=0.1)`` is ``step_lr(base_lr, step_size=30, gamma=0.1)``.
``schedule(t)`` is the ``lr`` torch's scheduler gives the optimizer's ``(t+1)``-th step, after
``t`` calls of ``scheduler.step()``; pass a schedule as ``lr=`` of any pure transform (it is
evaluated at the number of updates done before the current one) or to
:func:`optim_jax.inject_hyperparams`.

Called with a Python (or NumPy) number, a schedule computes on the host in float64 and returns
a Python float, bit for bit as torch's closed form where it has one (``_get_closed_form_lr``,
or ``get_lr`` for the classes that compute the rate outright): that is how
:mod:`optim_jax.lr_scheduler` evaluates the same formulas, so both faces share one
implementation of each. Called with an array step (traced or not), it computes with
``jax.numpy`` in the widest enabled float (float64 under ``jax_enable_x64``, else float32) and
returns an array; it jits and vmaps over steps.
XLA evaluates ``x / c`` as ``x * (1 / c)``, fuses multiply-adds and has its own ``cos``, so array
values differ from torch's in the last bits: about 1e-14 relative, up to 3e-11 where torch's
formula cancels (the last step of a short linear ``OneCycleLR``: 50 steps, 2.5e-11, where the
array value is the nearer to the exact one). Where torch's sequence is exactly 0 the array
forms are too.

Several of torch's classes update ``lr`` recursively (``lr *= gamma`` every step) rather than
from the closed form their documentation gives. Without outside changes to ``lr`` the two agree
to rounding (tested: 1e-12 relative over 300 steps in float64; where torch's recursion should
reach 0 it can end a rounding away, e.g. at -7e-19); the functions here use the closed form, so
that a schedule costs O(1) per step. The one exception is :func:`multiplicative_lr`, whose
factors have no product form. :func:`reduce_lr_on_plateau` depends on the losses seen, so it is
a transform with state, not a schedule.

The modules, by topic: :mod:`~optim_jax.schedules.arithmetic` (the ``Step`` and ``Schedule``
types, the host and array arithmetic), :mod:`~optim_jax.schedules.checks` (argument checks with
torch's messages), :mod:`~optim_jax.schedules.closed_forms`, :mod:`~optim_jax.schedules.cyclic`,
:mod:`~optim_jax.schedules.one_cycle`, :mod:`~optim_jax.schedules.combinations`,
:mod:`~optim_jax.schedules.plateau` (``ReduceLROnPlateau``) and :mod:`~optim_jax.schedules.swa`
(``SWALR``). This package only re-exports their public schedules.
"""

from optim_jax.schedules.arithmetic import Schedule, Step
from optim_jax.schedules.closed_forms import (
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multi_step_lr,
    multiplicative_lr,
    polynomial_lr,
    step_lr,
)
from optim_jax.schedules.combinations import chained_scheduler, sequential_lr
from optim_jax.schedules.cyclic import cyclic_lr, cyclic_momentum
from optim_jax.schedules.one_cycle import one_cycle_lr, one_cycle_momentum
from optim_jax.schedules.plateau import ReduceLROnPlateauState, reduce_lr_on_plateau
from optim_jax.schedules.swa import swa_annealing, swalr

__all__ = [
    "ReduceLROnPlateauState",
    "Schedule",
    "Step",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "one_cycle_momentum",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
    "swa_annealing",
    "swalr",
]
