"""optim_jax: torch.optim's algorithms and user experience, rebuilt on JAX.

Two faces over one engine: pure transforms (``optim_jax.adam(...)``, ``init``/``update`` over
pytrees, optax-compatible) and, built on them, torch-style stateful optimisers.
"""

from optim_jax import lr_scheduler, schedules, swa_utils
from optim_jax.adadelta import AdadeltaState, adadelta, scale_by_adadelta
from optim_jax.adafactor import AdafactorState, adafactor, scale_by_adafactor
from optim_jax.adagrad import AdagradState, adagrad, scale_by_adagrad
from optim_jax.adam import AdamState, adam, scale_by_adam
from optim_jax.adamax import AdamaxState, adamax, scale_by_adamax
from optim_jax.adamw import adamw
from optim_jax.asgd import ASGDState, asgd, scale_by_asgd
from optim_jax.averaging import (
    AveragingState,
    WeightAveraging,
    ema,
    ema_average,
    ema_warmup,
    swa,
    swa_average,
    weight_averaging,
)
from optim_jax.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    apply_updates,
    identity,
    with_extra_args_support,
)
from optim_jax.combine import PartitionState, chain, partition, view_as_real
from optim_jax.stateful.algorithms import (
    ASGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    AdamW,
    Adamax,
    Muon,
    NAdam,
    RAdam,
    RMSprop,
    Rprop,
    SGD,
    SparseAdam,
)
from optim_jax.stateful.hooks import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from optim_jax.hyperparams import InjectHyperparamsState, inject_hyperparams
from optim_jax.lbfgs import LBFGSState, lbfgs, lbfgs_step
from optim_jax.stateful.lbfgs import LBFGS
from optim_jax.muon import (
    MuonState,
    muon,
    scale_by_newton_schulz,
    trace_muon_momentum,
    zeropower_via_newtonschulz,
)
from optim_jax.nadam import NAdamState, nadam, scale_by_nadam
from optim_jax.packing import ContiguousState, Packing, contiguous
from optim_jax.patterns import leaf_names, pattern_labels
from optim_jax.stateful.layout import groups_by_pattern, labelled
from optim_jax.stateful.optimizer import Optimizer, required
from optim_jax.radam import RAdamState, radam, scale_by_radam
from optim_jax.rmsprop import RMSpropState, rmsprop, scale_by_rms
from optim_jax.rprop import RpropState, rprop, scale_by_rprop
from optim_jax.sgd import sgd
from optim_jax.sharding import zero_redundancy
from optim_jax.stateful.zero_redundancy import ZeroRedundancyOptimizer
from optim_jax.sparse_adam import scale_by_sparse_adam, sparse_adam
from optim_jax.blocks import (
    MomentumState,
    ScheduleState,
    add_decayed_weights,
    clip_grad_norm,
    descent,
    negate,
    scale_by_learning_rate,
    trace_momentum,
)

__version__ = "0.1.0"

__all__ = [
    "ContiguousState",
    "Packing",
    "contiguous",
    "Adadelta",
    "adadelta",
    "AdadeltaState",
    "Adafactor",
    "adafactor",
    "AdafactorState",
    "Adagrad",
    "adagrad",
    "AdagradState",
    "Adam",
    "adam",
    "Adamax",
    "adamax",
    "AdamaxState",
    "AdamState",
    "AdamW",
    "adamw",
    "add_decayed_weights",
    "clip_grad_norm",
    "apply_updates",
    "ASGD",
    "asgd",
    "ASGDState",
    "AveragingState",
    "chain",
    "descent",
    "ema",
    "ema_average",
    "ema_warmup",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "identity",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "labelled",
    "groups_by_pattern",
    "leaf_names",
    "pattern_labels",
    "LBFGS",
    "lbfgs",
    "lbfgs_step",
    "LBFGSState",
    "lr_scheduler",
    "MomentumState",
    "Muon",
    "muon",
    "MuonState",
    "NAdam",
    "nadam",
    "NAdamState",
    "negate",
    "Optimizer",
    "partition",
    "PartitionState",
    "RAdam",
    "radam",
    "RAdamState",
    "required",
    "RMSprop",
    "rmsprop",
    "RMSpropState",
    "Rprop",
    "rprop",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "RpropState",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_learning_rate",
    "scale_by_nadam",
    "scale_by_newton_schulz",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_sparse_adam",
    "schedules",
    "ScheduleState",
    "SGD",
    "sgd",
    "sparse_adam",
    "SparseAdam",
    "swa",
    "swa_average",
    "swa_utils",
    "trace_momentum",
    "trace_muon_momentum",
    "view_as_real",
    "weight_averaging",
    "WeightAveraging",
    "with_extra_args_support",
    "zeropower_via_newtonschulz",
    "zero_redundancy",
    "ZeroRedundancyOptimizer",
]
