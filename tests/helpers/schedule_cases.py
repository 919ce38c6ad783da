"""The schedulers compared with torch.optim.lr_scheduler: each built by one function for torch's
module and optim_jax's, with its pure schedules; the two-group optimizers they drive."""

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

import optim_jax as optim
from optim_jax import schedules

STEPS = 300
BASE_LRS = (0.1, 0.03)  # the two groups' lr
OPTIMIZERS = {"sgd": ("SGD", {"momentum": 0.9}), "adam": ("Adam", {})}


@dataclass(frozen=True)
class Case:
    """A scheduler: ``build(module, optimizer)`` with torch's or optim_jax's lr_scheduler
    module, and the pure schedules of group ``g``: ``pure(g)`` (lr) and ``momentum(g)``."""

    id: str
    build: Callable[[Any, Any], Any]
    pure: Callable[[int], Callable]
    momentum: Callable[[int], Callable] | None = None
    optimizer: str = "sgd"


def per_group(*values):
    return lambda g: values[g]


# Functions of the step that jit and give torch's values on Python ints.
LAMBDAS = (lambda t: 0.97**t, lambda t: 1 / (1 + t // 10))
FACTOR = lambda t: 0.99 + 0.02 * (t % 3 == 0)  # noqa: E731
CYCLIC = dict(base_lr=[0.01, 0.003], max_lr=[0.1, 0.03], step_size_up=20, step_size_down=13,
              base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.95])


def cyclic_pure(g, **kwargs):
    return schedules.cyclic_lr(CYCLIC["base_lr"][g], CYCLIC["max_lr"][g], 20, 13, **kwargs)


CASES = [
    Case("LambdaLR", lambda m, o: m.LambdaLR(o, list(LAMBDAS)),
         lambda g: schedules.lambda_lr(BASE_LRS[g], LAMBDAS[g])),
    Case("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, FACTOR),
         lambda g: schedules.multiplicative_lr(BASE_LRS[g], FACTOR)),
    Case("StepLR", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
         lambda g: schedules.step_lr(BASE_LRS[g], step_size=7, gamma=0.5)),
    Case("MultiStepLR", lambda m, o: m.MultiStepLR(o, milestones=[120, 20, 50, 50], gamma=0.7),
         lambda g: schedules.multi_step_lr(BASE_LRS[g], milestones=[120, 20, 50, 50], gamma=0.7)),
    Case("ConstantLR", lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=40),
         lambda g: schedules.constant_lr(BASE_LRS[g], factor=0.25, total_iters=40)),
    Case("LinearLR", lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=100),
         lambda g: schedules.linear_lr(BASE_LRS[g], 0.2, 0.9, 100)),
    # torch's recursion ends at -7e-19 instead of 0 (after step 150: see the state_dict test)
    Case("LinearLR-to-zero", lambda m, o: m.LinearLR(o, start_factor=1 / 3, end_factor=0.0,
                                                       total_iters=200),
         lambda g: schedules.linear_lr(BASE_LRS[g], 1 / 3, 0.0, 200)),
    Case("ExponentialLR", lambda m, o: m.ExponentialLR(o, gamma=0.98),
         lambda g: schedules.exponential_lr(BASE_LRS[g], gamma=0.98)),
    Case("PolynomialLR", lambda m, o: m.PolynomialLR(o, total_iters=200, power=2.0),
         lambda g: schedules.polynomial_lr(BASE_LRS[g], total_iters=200, power=2.0)),
    Case("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, T_max=70, eta_min=0.001),
         lambda g: schedules.cosine_annealing_lr(BASE_LRS[g], T_max=70, eta_min=0.001)),
    Case("CosineAnnealingLR-to-zero", lambda m, o: m.CosineAnnealingLR(o, T_max=100),
         lambda g: schedules.cosine_annealing_lr(BASE_LRS[g], T_max=100)),
    Case("CosineAnnealingWarmRestarts", lambda m, o: m.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4),
         lambda g: schedules.cosine_annealing_warm_restarts(BASE_LRS[g], 10, 2, 1e-4)),
    Case("CosineAnnealingWarmRestarts-T_mult-1", lambda m, o: m.CosineAnnealingWarmRestarts(o, 37),
         lambda g: schedules.cosine_annealing_warm_restarts(BASE_LRS[g], T_0=37)),
    Case("CyclicLR-triangular", lambda m, o: m.CyclicLR(o, **CYCLIC),
         cyclic_pure,
         lambda g: schedules.cyclic_momentum(CYCLIC["base_momentum"][g],
                                             CYCLIC["max_momentum"][g], 20, 13)),
    Case("CyclicLR-triangular2", lambda m, o: m.CyclicLR(o, 0.01, 0.1, 15, mode="triangular2"),
         lambda g: schedules.cyclic_lr(0.01, 0.1, 15, mode="triangular2"),
         lambda g: schedules.cyclic_momentum(step_size_up=15, mode="triangular2"), "adam"),
    Case("CyclicLR-exp_range", lambda m, o: m.CyclicLR(o, 0.01, 0.1, 15, mode="exp_range",
                                                        gamma=0.995),
         lambda g: schedules.cyclic_lr(0.01, 0.1, 15, mode="exp_range", gamma=0.995),
         lambda g: schedules.cyclic_momentum(step_size_up=15, mode="exp_range", gamma=0.995)),
    Case("CyclicLR-scale_fn", lambda m, o: m.CyclicLR(o, 0.01, 0.1, 9, 21,
                                                       scale_fn=lambda x: 0.9**x,
                                                       scale_mode="iterations",
                                                       cycle_momentum=False),
         lambda g: schedules.cyclic_lr(0.01, 0.1, 9, 21, scale_fn=lambda x: 0.9**x,
                                       scale_mode="iterations")),
    Case("OneCycleLR-cos", lambda m, o: m.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=STEPS),
         lambda g: schedules.one_cycle_lr((0.1, 0.05)[g], total_steps=STEPS),
         lambda g: schedules.one_cycle_momentum(total_steps=STEPS)),
    Case("OneCycleLR-linear-three-phase",
         lambda m, o: m.OneCycleLR(o, 0.1, epochs=3, steps_per_epoch=100, anneal_strategy="linear",
                                   base_momentum=0.8, three_phase=True),
         lambda g: schedules.one_cycle_lr(0.1, epochs=3, steps_per_epoch=100,
                                          anneal_strategy="linear", three_phase=True),
         lambda g: schedules.one_cycle_momentum(epochs=3, steps_per_epoch=100,
                                                anneal_strategy="linear", base_momentum=0.8,
                                                three_phase=True),
         "adam"),
    Case("SequentialLR",
         lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, total_iters=30),
                                         m.CosineAnnealingLR(o, T_max=100),
                                         m.ExponentialLR(o, gamma=0.99)], milestones=[40, 150]),
         lambda g: schedules.sequential_lr([schedules.linear_lr(BASE_LRS[g], 0.1, total_iters=30),
                                            schedules.cosine_annealing_lr(BASE_LRS[g], 100),
                                            schedules.exponential_lr(BASE_LRS[g], 0.99)],
                                           milestones=[40, 150])),
    Case("ChainedScheduler",
         lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.5, total_iters=20),
                                          m.CosineAnnealingLR(o, T_max=400),
                                          m.StepLR(o, step_size=50, gamma=0.5)]),
         lambda g: schedules.chained_scheduler(
             [schedules.constant_lr(BASE_LRS[g], factor=0.5, total_iters=20),
              schedules.cosine_annealing_lr(BASE_LRS[g], T_max=400),
              schedules.step_lr(BASE_LRS[g], step_size=50, gamma=0.5)], BASE_LRS[g])),
]


def torch_optimizer(torch, kind):
    name, options = OPTIMIZERS[kind]
    groups = [{"params": [torch.zeros(2, requires_grad=True)]},
              {"params": [torch.zeros(3, requires_grad=True)], "lr": BASE_LRS[1]}]
    return getattr(torch.optim, name)(groups, lr=BASE_LRS[0], **options)


def jax_optimizer(kind):
    name, options = OPTIMIZERS[kind]
    groups = [{"params": jnp.zeros(2)}, {"params": jnp.zeros(3), "lr": BASE_LRS[1]}]
    opt = getattr(optim, name)(groups, lr=BASE_LRS[0], **options)
    opt.zero_grad(set_to_none=False)  # a (zero) gradient, so that step() runs
    return opt
