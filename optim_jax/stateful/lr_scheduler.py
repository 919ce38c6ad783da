"""torch.optim.lr_scheduler over optim_jax's stateful optimisers.

The classes drive ``optimizer.param_groups[i]['lr']`` (and ``initial_lr``, and the momentum or
``betas[0]`` that ``CyclicLR`` and ``OneCycleLR`` cycle) exactly as torch's do, with the same
constructors, ``step()``, ``get_last_lr()``, ``last_epoch``, ``state_dict()`` /
``load_state_dict()`` and error messages. The learning rates are Python floats computed with
torch's arithmetic in torch's order, so the sequences are torch's to the bit. An optim_jax
optimizer reads a group's numeric hyperparameters as arguments of its compiled step, so a
scheduler changing them every step never recompiles it.

Where torch's class has a closed form (``_get_closed_form_lr``, used by ``step(epoch)`` and by
``SequentialLR`` at a milestone) or computes the rate outright (``CyclicLR``, ``OneCycleLR``,
``CosineAnnealingWarmRestarts``), the class evaluates the pure schedule of
:mod:`optim_jax.schedules` on the host: one implementation serves both faces. The recursive
updates of the chainable schedulers (``lr *= gamma``) are ported as torch writes them, so they
react to outside changes of ``lr`` as torch's do.

One mechanism differs: torch wraps ``optimizer.step`` and flags the optimizer when it steps, to
warn when a scheduler steps first. Here each scheduler registers a step post-hook through the
optimizer's public ``register_step_post_hook`` and records in itself that the optimizer has
stepped since it was built; ``step()`` gives torch's warning. torch's flag counts from the first
scheduler built on the optimizer, so a second scheduler built after the optimizer stepped, then
stepped before it, warns here and not in torch (it does skip its first rate). torch's other
warning, about an ``optimizer.step`` replaced after the scheduler was built, has no
counterpart: a hook survives that.
"""

from __future__ import annotations

import contextlib
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Sequence, SupportsFloat

from optim_jax import schedules
from optim_jax.schedules import checks, closed_forms, cyclic, one_cycle, plateau
from optim_jax.schedules.arithmetic import HOST
from optim_jax.stateful.optimizer import Optimizer

__all__ = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "PolynomialLR",
    "LRScheduler",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _format_param(name: str, optimizer: Optimizer, param: Any) -> list[Any]:
    """One value per param group: a scalar repeated, or a list of the right length."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has "
                f"{len(optimizer.param_groups)}."
            )
        return list(param)
    return [param] * len(optimizer.param_groups)


def _param_groups_val_list(optimizer: Optimizer, key: str) -> list[Any]:
    return [group[key] for group in optimizer.param_groups]


@contextlib.contextmanager
def _flag(scheduler: Any, name: str) -> Iterator[None]:
    """Sets the boolean attribute ``name`` while the block runs (torch's context managers)."""
    setattr(scheduler, name, True)
    try:
        yield
    finally:
        setattr(scheduler, name, False)


def _warn_get_lr_called_within_step(scheduler: LRScheduler) -> None:
    if not scheduler._get_lr_called_within_step:
        warnings.warn(
            "To get the last learning rate computed by the scheduler, "
            "please use `get_last_lr()`.",
            UserWarning,
            stacklevel=3,
        )


class LRScheduler:
    """Base of the schedulers, as torch's ``LRScheduler``.

    Subclasses implement :meth:`get_lr` (the next rates, from ``last_epoch``) and may override
    :meth:`step`. Constructing one records each group's ``lr`` as ``initial_lr`` (unless set)
    and takes the initial step, which sets the rates for the optimizer's first step.

    Args:
      optimizer: the :class:`optim_jax.Optimizer` whose ``param_groups`` it drives.
      last_epoch: the index of the last step taken; -1 starts the schedule. Resuming with
        another value needs ``initial_lr`` in every group (from the optimizer's state dict).
    """

    # Whether the optimizer has stepped since this scheduler was built, for step()'s warning. A
    # slot, not in __dict__: state_dict() saves __dict__ as torch's does, and torch keeps this
    # flag (_opt_called) on the optimizer, outside the scheduler's state.
    __slots__ = ("__dict__", "__weakref__", "_optimizer_stepped")

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't "
                        "properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not "
                        "recommended)"
                    )
        self.base_lrs: list[float] = _param_groups_val_list(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._track_optimizer_steps()
        self._initial_step()

    def _track_optimizer_steps(self) -> None:
        """Sets ``_optimizer_stepped`` once the optimizer steps, through a step post-hook."""
        self._optimizer_stepped = False

        def stepped(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            self._optimizer_stepped = True
            handle.remove()  # the flag never resets, so the first step is all it needs

        handle = self.optimizer.register_step_post_hook(stepped)

    def _initial_step(self) -> None:
        """Resets the step count and takes the initial step."""
        self._step_count = 0
        with _flag(self, "_is_initial"):
            self.step()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer (torch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list[float]:
        """The learning rates the last step set, one per param group."""
        return self._last_lr

    def get_lr(self) -> list[float]:
        """The next learning rates, one per param group (use :meth:`get_last_lr` to read)."""
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advances the schedule one step and sets the groups' learning rates.

        Call it after ``optimizer.step()``. ``epoch`` (deprecated, as in torch) jumps to that
        step, through the closed form where the class has one.
        """
        if self._step_count == 1 and not self._optimizer_stepped:
            warnings.warn(
                "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
                "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
                "will result in PyTorch skipping the first value of the learning rate "
                "schedule. See more details at "
                "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate",
                UserWarning,
                stacklevel=2,
            )
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _flag(self, "_get_lr_called_within_step"):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr: list[float] = _param_groups_val_list(self.optimizer, "lr")


class _LambdaScheduler(LRScheduler):
    """What ``LambdaLR`` and ``MultiplicativeLR`` share: one function per group, and a state
    dict that keeps callable objects' attributes but not plain functions."""

    _require_callable = False

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        if not isinstance(lr_lambda, (list, tuple)):
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        else:
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(
                    f"Expected {len(optimizer.param_groups)} lr_lambdas, but got "
                    f"{len(lr_lambda)}"
                )
            self.lr_lambdas = list(lr_lambda)
        if self._require_callable:
            for fn in self.lr_lambdas:
                checks.check_lr_lambda(fn)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The state; ``lr_lambdas`` holds callable objects' ``__dict__``, ``None`` for
        functions and lambdas (which are not saved)."""
        state_dict = {
            key: value
            for key, value in self.__dict__.items()
            if key not in ("optimizer", "lr_lambdas")
        }
        state_dict["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
            for fn in self.lr_lambdas
        ]
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`.

        ``state_dict`` is not modified; callable objects' attributes are restored into the
        current ``lr_lambdas``.
        """
        state = dict(state_dict)
        lr_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for fn, saved in zip(self.lr_lambdas, lr_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
    """Sets each group's lr to its initial lr times ``lr_lambda(epoch)``.

    Args:
      optimizer: the wrapped optimizer.
      lr_lambda: a function of the step giving the factor, or a list of them, one per group.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def get_lr(self) -> list[float]:
        """``base_lr * lr_lambda(last_epoch)`` per group (:func:`schedules.lambda_lr`)."""
        _warn_get_lr_called_within_step(self)
        return [
            base_lr * lmbda(self.last_epoch)
            for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]


class MultiplicativeLR(_LambdaScheduler):
    """Multiplies each group's lr by ``lr_lambda(epoch)`` every step.

    Args:
      optimizer: the wrapped optimizer.
      lr_lambda: a function of the step giving the factor, or a list of them, one per group.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    _require_callable = True

    def get_lr(self) -> list[float]:
        """The current lrs times ``lr_lambda(last_epoch)`` (:func:`schedules.multiplicative_lr`)."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        return [
            group["lr"] * lmbda(self.last_epoch)
            for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


class StepLR(LRScheduler):
    """Multiplies each group's lr by ``gamma`` every ``step_size`` steps.

    Args:
      optimizer: the wrapped optimizer.
      step_size: the period of the decay.
      gamma: the multiplicative factor of the decay.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs, times ``gamma`` at a non-zero multiple of ``step_size``."""
        _warn_get_lr_called_within_step(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.step_lr(base_lr, self.step_size, self.gamma)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


class MultiStepLR(LRScheduler):
    """Multiplies each group's lr by ``gamma`` at each milestone.

    Args:
      optimizer: the wrapped optimizer.
      milestones: the steps of the decays (a step listed twice decays twice).
      gamma: the multiplicative factor of the decay.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs, times ``gamma ** count`` at a milestone listed ``count`` times."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _param_groups_val_list(self.optimizer, "lr")
        return [
            group["lr"] * self.gamma ** self.milestones[self.last_epoch]
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        milestones = list(self.milestones.elements())
        return [
            schedules.multi_step_lr(base_lr, milestones, self.gamma)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


class ConstantLR(LRScheduler):
    """Multiplies each group's lr by ``factor`` until ``total_iters`` steps.

    Args:
      optimizer: the wrapped optimizer.
      factor: the factor in [0, 1] applied until the milestone.
      total_iters: the number of steps the factor applies.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        checks.check_constant_factor(factor)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times ``factor`` at step 0, divided by it at ``total_iters``."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.constant_lr(base_lr, self.factor, self.total_iters)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


class LinearLR(LRScheduler):
    """Scales each group's lr by a factor moving linearly from one value to another.

    The factor goes from ``start_factor`` to ``end_factor`` over ``total_iters`` steps
    (:func:`optim_jax.schedules.linear_lr`).

    Args:
      optimizer: the wrapped optimizer.
      start_factor: the factor at step 0, in (0, 1].
      end_factor: the factor from ``total_iters`` on, in [0, 1].
      total_iters: the number of steps of the change.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        checks.check_linear_factors(start_factor, end_factor)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times the ratio of this step's factor to the previous one's."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        return [
            group["lr"]
            * (
                1.0
                + (self.end_factor - self.start_factor)
                / (
                    self.total_iters * self.start_factor
                    + (self.last_epoch - 1) * (self.end_factor - self.start_factor)
                )
            )
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.linear_lr(base_lr, self.start_factor, self.end_factor, self.total_iters)(
                self.last_epoch
            )
            for base_lr in self.base_lrs
        ]


class ExponentialLR(LRScheduler):
    """Multiplies each group's lr by ``gamma`` every step.

    Args:
      optimizer: the wrapped optimizer.
      gamma: the multiplicative factor of each step.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times ``gamma`` (unchanged by the initial step)."""
        _warn_get_lr_called_within_step(self)
        # When resuming, the constructor's initial step must not move the lr a step ahead.
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.exponential_lr(base_lr, self.gamma)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


class PolynomialLR(LRScheduler):
    """Decays each group's lr as ``(1 - t / total_iters) ** power``, to 0 at ``total_iters``.

    Args:
      optimizer: the wrapped optimizer.
      total_iters: the number of steps of the decay.
      power: the power of the polynomial.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times the ratio of this step's decay to the previous one's."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        decay_factor = (
            (1.0 - self.last_epoch / self.total_iters)
            / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.polynomial_lr(base_lr, self.total_iters, self.power)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


class CosineAnnealingLR(LRScheduler):
    """Anneals each group's lr along a cosine down to ``eta_min``, recursively as torch does.

    From its initial lr to ``eta_min`` in ``T_max`` steps:

    .. math::
        \\eta_t = \\eta_{min} + (\\eta_{t-1} - \\eta_{min})
        \\frac{1 + \\cos(\\pi t / T_{max})}{1 + \\cos(\\pi (t - 1) / T_{max})}

    Without outside changes of ``lr`` this is the closed form of
    :func:`optim_jax.schedules.cosine_annealing_lr` to rounding; after one (``group['lr'] = x``,
    or a scheduler chained with it) it continues from the changed rate, as torch's does.

    Args:
      optimizer: the wrapped optimizer.
      T_max: the number of steps of the half period.
      eta_min: the minimum learning rate.
      last_epoch: the index of the last step; -1 starts the schedule.

    References:
      Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, ICLR 2017 (its annealing, without restarts).
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The next lrs by torch's recursion (the closed form when resuming)."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            return self._get_closed_form_lr()
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            # The recursion's ratio would be 0/0 one step past each minimum.
            return [
                group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        return [
            (1 + math.cos(math.pi * self.last_epoch / self.T_max))
            / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
            * (group["lr"] - self.eta_min)
            + self.eta_min
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            schedules.cosine_annealing_lr(base_lr, self.T_max, self.eta_min)(self.last_epoch)
            for base_lr in self.base_lrs
        ]


def _check_schedulers(
    name: str, schedulers: Sequence[LRScheduler], optimizer: Optimizer
) -> None:
    """torch's checks of the schedulers SequentialLR and ChainedScheduler combine."""
    for scheduler_idx, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(
                f"{name} at index {scheduler_idx} should have `optimizer` as its attribute."
            )
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it "
                "requires additional kwargs to be specified when calling `step`, "
                f"but got one at index {scheduler_idx} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{name} expects all schedulers to belong to the same optimizer, but "
                f"got scheduler {scheduler.__class__.__name__} at index {scheduler_idx} has "
                f"{scheduler.optimizer}, which is different from "
                f"{optimizer.__class__.__name__}."
            )


class _SchedulerList(LRScheduler):
    """What ``SequentialLR`` and ``ChainedScheduler`` share: a state dict that nests their
    schedulers' state dicts."""

    _schedulers: list[LRScheduler]

    def state_dict(self) -> dict[str, Any]:
        """The state, with the schedulers' state dicts under ``_schedulers``."""
        state_dict = {
            key: value
            for key, value in self.__dict__.items()
            if key not in ("optimizer", "_schedulers")
        }
        state_dict["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`.

        ``state_dict`` is not modified; the nested schedulers load their own state dicts.
        """
        state = dict(state_dict)
        nested = state.pop("_schedulers")
        self.__dict__.update(state)
        for scheduler, saved in zip(self._schedulers, nested):
            scheduler.load_state_dict(saved)


class SequentialLR(_SchedulerList):
    """Runs ``schedulers[i]`` from ``milestones[i-1]`` on (restarted at its step 0).

    Args:
      optimizer: the wrapped optimizer, which every scheduler must drive.
      schedulers: the schedulers, in order.
      milestones: the steps at which the next scheduler takes over.
      last_epoch: the index of the last step; -1 starts the schedule.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        checks.check_schedule_count(self.__class__.__name__, len(schedulers))
        _check_schedulers(self.__class__.__name__, schedulers, optimizer)
        checks.check_milestone_count(len(schedulers), len(milestones))
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # The schedulers' constructors took their initial steps: undo them, then take only the
        # one of the scheduler meant to run at step 0.
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched: LRScheduler | None = None) -> None:
        """Steps back ``last_epoch`` of every (nested) scheduler by one.

        ``sched`` is the scheduler to undo, recursively into its ``_schedulers``; ``None``
        means this one.
        """
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Steps the scheduler of the current interval (restarting it at a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_SchedulerList):
    """Steps every scheduler of ``schedulers`` at each step, in order.

    Args:
      schedulers: the schedulers, all driving the same optimizer.
      optimizer: that optimizer; default the first scheduler's.
    """

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None
    ) -> None:
        checks.check_schedule_count(self.__class__.__name__, len(schedulers), " to be chained")
        optimizer = optimizer or schedulers[0].optimizer
        _check_schedulers(self.__class__.__name__, schedulers, optimizer)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Steps every scheduler, in order, and records the resulting lrs."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")


class ReduceLROnPlateau(LRScheduler):
    """Reduces each group's lr by ``factor`` once a metric stops improving: ``step(metric)``.

    A reduction follows more than ``patience`` steps without a significant improvement.

    Args:
      optimizer: the wrapped optimizer.
      mode: ``'min'`` (the metric should decrease) or ``'max'``.
      factor: the reduction factor, < 1.
      patience: steps without improvement tolerated before a reduction.
      threshold: the margin of a significant improvement.
      threshold_mode: ``'rel'`` (relative to the best) or ``'abs'``.
      cooldown: steps ignored after a reduction.
      min_lr: a lower bound on the lr, for all groups or a list with one per group.
      eps: reductions smaller than this are skipped.

    The rule is :func:`optim_jax.schedules.reduce_lr_on_plateau`'s.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        checks.check_plateau_factor(factor)
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(
                    f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}"
                )
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Resets the best value and the bad-epoch and cooldown counters."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(  # type: ignore[override]
        self, metrics: SupportsFloat, epoch: int | None = None
    ) -> None:
        """Takes the metric of the step just done; reduces the lrs on a plateau.

        Args:
          metrics: the metric's value (a number or a scalar array, read with ``float``).
          epoch: deprecated, as in torch: the step index to record instead of
            ``last_epoch + 1``.
        """
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        self.best, self.num_bad_epochs, self.cooldown_counter, reduce = plateau.plateau_step(
            current, self.best, self.num_bad_epochs, self.cooldown_counter,
            mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode,
            patience=self.patience, cooldown=self.cooldown, ops=HOST,
        )
        if reduce:
            self._reduce_lr(epoch)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    "The number of param groups in the `optimizer` "
                    f"({len(self.optimizer.param_groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized "
                    f"({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length "
                    "of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            group["lr"] = plateau.plateau_reduced_lr(
                float(group["lr"]), self.factor, min_lr, self.eps, HOST
            )

    @property
    def in_cooldown(self) -> bool:
        """Whether the steps after a reduction are still being ignored."""
        return self.cooldown_counter > 0

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        checks.check_plateau_modes(mode, threshold_mode)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`."""
        self.__dict__.update(state_dict)
        self._init_is_better(
            mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode
        )


def _momentum_key(optimizer: Optimizer) -> bool:
    """Whether momentum cycles as ``betas[0]`` (Adam) rather than ``momentum`` (SGD)."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(
            "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
        )
    return "betas" in optimizer.defaults


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _start_momentum(
    optimizer: Optimizer, max_momentums: list[float], base_momentums: list[float], use_beta1: bool
) -> None:
    """Starts every group at its ``max_momentum`` and records both bounds in it."""
    for m_momentum, b_momentum, group in zip(
        max_momentums, base_momentums, optimizer.param_groups, strict=True
    ):
        _set_momentum(group, m_momentum, use_beta1)
        group["max_momentum"] = m_momentum
        group["base_momentum"] = b_momentum


class CyclicLR(LRScheduler):
    """Cycles each group's lr between ``base_lr`` and ``max_lr`` (Smith's cyclical rates).

    With ``cycle_momentum``, its momentum or ``betas[0]`` cycles inversely. The rates are
    :func:`optim_jax.schedules.cyclic_lr`'s and :func:`~optim_jax.schedules.cyclic_momentum`'s.

    Args:
      optimizer: the wrapped optimizer.
      base_lr: the lower lr boundary, or a list with one per group.
      max_lr: the upper lr boundary, or a list with one per group.
      step_size_up: steps in the rising half of a cycle.
      step_size_down: steps in the falling half; ``None``: ``step_size_up``.
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``.
      gamma: the constant of ``'exp_range'``: ``gamma ** iterations``.
      scale_fn: a custom scale replacing ``mode``.
      scale_mode: ``'cycle'`` or ``'iterations'``, what ``scale_fn`` takes.
      cycle_momentum: cycle the momentum inversely to the lr.
      base_momentum: the momentum at the lr's peak, or a list with one per group.
      max_momentum: the momentum at the start of a cycle, or a list with one per group.
      last_epoch: the index of the last batch; -1 starts the schedule.

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, WACV 2017.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                group["lr"] = lr
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        self.total_size, self.step_ratio = cyclic.cyclic_sizes(step_size_up, step_size_down)
        checks.check_cyclic_mode(mode, scale_fn)
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                _start_momentum(optimizer, self.max_momentums, self.base_momentums,
                                self.use_beta1)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        self._scale_fn_ref, self.scale_mode = cyclic.cyclic_builtin_scale(
            self.mode, self.gamma
        )

    def scale_fn(self, x: Any) -> float:
        """The scaling policy at ``x`` (a cycle number or a step, per ``scale_mode``).

        The custom ``scale_fn`` if one was given, else the mode's.
        """
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    def _height(self, low: float, high: float) -> float:
        return cyclic.cyclic_height(
            self.last_epoch, low, high, self.total_size, self.step_ratio, self.scale_fn,
            self.scale_mode, HOST,
        )

    def get_lr(self) -> list[float]:
        """The lrs at ``last_epoch``; with ``cycle_momentum``, also sets the momentums."""
        _warn_get_lr_called_within_step(self)
        lrs = [
            base_lr + self._height(base_lr, max_lr)
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for group, base_momentum, max_momentum in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums,
                strict=True,
            ):
                momentum = max_momentum - self._height(base_momentum, max_momentum)
                _set_momentum(group, momentum, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, with a custom ``scale_fn`` reduced to its attributes.

        A callable object is saved as its ``__dict__``; a function or lambda is not saved.
        """
        state = super().state_dict()
        state.pop("_scale_fn_ref", None)  # the mode's function, rebuilt on load
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`.

        ``state_dict`` is not modified; a saved custom ``scale_fn``'s attributes are restored
        into the current one.
        """
        state = dict(state_dict)
        fn = state.pop("_scale_fn_custom")
        super().load_state_dict(state)
        if fn is not None:
            self._scale_fn_custom.__dict__.update(fn)
        self._init_scale_fn()


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from each group's initial lr to ``eta_min`` with warm restarts (SGDR).

    Cycles of ``T_0``, ``T_0 * T_mult``, ... steps, as
    :func:`optim_jax.schedules.cosine_annealing_warm_restarts`.

    Args:
      optimizer: the wrapped optimizer.
      T_0: the number of steps until the first restart.
      T_mult: the factor by which each cycle is longer than the previous one.
      eta_min: the minimum learning rate.
      last_epoch: the index of the last step; -1 starts the schedule.

    References:
      Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        checks.check_warm_restarts(T_0, T_mult, eta_min)
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The cosine of ``T_cur / T_i`` between each initial lr and ``eta_min``."""
        _warn_get_lr_called_within_step(self)
        return [
            closed_forms.cosine(base_lr, self.eta_min, self.T_cur, self.T_i, HOST)
            for base_lr in self.base_lrs
        ]

    def step(self, epoch: float | None = None) -> None:
        """Advances one step, or (``epoch``, which may be fractional) jumps to that point."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** (n)
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _flag(self, "_get_lr_called_within_step"):
            for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
                group["lr"] = lr
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


class OneCycleLR(LRScheduler):
    """The 1cycle policy: each group's lr rises to ``max_lr``, then falls far below the start.

    The lr starts at ``max_lr / div_factor``; with ``cycle_momentum``, momentum or ``betas[0]``
    moves inversely. The rates are :func:`optim_jax.schedules.one_cycle_lr`'s and
    :func:`~optim_jax.schedules.one_cycle_momentum`'s.

    Args:
      optimizer: the wrapped optimizer.
      max_lr: the peak lr, or a list with one per group.
      total_steps: the steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
      epochs: with ``steps_per_epoch``, ``total_steps = epochs * steps_per_epoch``.
      steps_per_epoch: see ``epochs``.
      pct_start: the fraction of the cycle spent increasing the lr.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      cycle_momentum: cycle the momentum inversely to the lr.
      base_momentum: the momentum at the lr's peak, or a list with one per group.
      max_momentum: the momentum at the start and end, or a list with one per group.
      div_factor: ``initial_lr = max_lr / div_factor``.
      final_div_factor: ``min_lr = initial_lr / final_div_factor``.
      three_phase: the three-phase variant (back to ``initial_lr``, then down to ``min_lr``).
      last_epoch: the index of the last batch; -1 starts the schedule.

    References:
      Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large
      Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2017.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.total_steps = checks.one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
        self._schedule_phases = one_cycle.one_cycle_phases(
            self.total_steps, pct_start, three_phase
        )
        checks.check_one_cycle(pct_start, anneal_strategy)
        self._anneal_func_type = anneal_strategy
        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        if last_epoch == -1:
            for idx, group in enumerate(self.optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                _start_momentum(optimizer, max_momentums, base_momentums, self.use_beta1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The lrs at ``last_epoch``; with ``cycle_momentum``, also sets the momentums."""
        _warn_get_lr_called_within_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        anneal = one_cycle.ANNEALING[self._anneal_func_type]
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(one_cycle.one_cycle_value(
                step_num, self._schedule_phases, group, anneal, "lr", HOST
            ))
            if self.cycle_momentum:
                momentum = one_cycle.one_cycle_value(
                    step_num, self._schedule_phases, group, anneal, "momentum", HOST
                )
                _set_momentum(group, momentum, self.use_beta1)
        return lrs
