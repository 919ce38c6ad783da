"""optim_jax: torch.optim's algorithms and user experience, rebuilt on JAX.

Two faces over one engine: pure transforms (``optim_jax.adam(...)``, ``init``/``update`` over
pytrees, optax-compatible) and, built on them, torch-style stateful optimisers.
"""

from optim_jax import lr_scheduler, schedules
from optim_jax.adam import Adam, adam
from optim_jax.adamw import AdamW, adamw
from optim_jax.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    apply_updates,
    identity,
    with_extra_args_support,
)
from optim_jax.combine import PartitionState, chain, partition, view_as_real
from optim_jax.hyperparams import InjectHyperparamsState, inject_hyperparams
from optim_jax.lbfgs import LBFGS, LBFGSState, lbfgs, lbfgs_step
from optim_jax.optimizer import Optimizer, labelled, required
from optim_jax.sgd import SGD, sgd
from optim_jax.transform import (
    AdamState,
    MomentumState,
    ScheduleState,
    add_decayed_weights,
    negate,
    scale_by_adam,
    scale_by_learning_rate,
    trace_momentum,
)

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "LBFGS",
    "LBFGSState",
    "Optimizer",
    "SGD",
    "labelled",
    "lr_scheduler",
    "schedules",
    "required",
    "AdamState",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "InjectHyperparamsState",
    "MomentumState",
    "PartitionState",
    "ScheduleState",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "identity",
    "inject_hyperparams",
    "lbfgs",
    "lbfgs_step",
    "negate",
    "partition",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "trace_momentum",
    "view_as_real",
    "with_extra_args_support",
]
