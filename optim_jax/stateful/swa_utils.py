"""torch.optim.swa_utils over optim_jax: averaged models (SWA, EMA), SWALR and update_bn.

The stateful face of :mod:`optim_jax.averaging`, with torch's names and semantics::

    swa_model = swa_utils.AveragedModel(model)                    # SWA
    ema_model = swa_utils.AveragedModel(
        model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.999))  # EMA
    swa_scheduler = swa_utils.SWALR(opt, swa_lr=0.05)
    for epoch in range(epochs):
        for x, y in loader:
            opt.step(closure)
        if epoch > swa_start:
            swa_model.update_parameters(model)
            swa_scheduler.step()
        else:
            scheduler.step()
    swa_utils.update_bn(loader, swa_model)

``model`` is a params pytree (``opt.params``) or a flax nnx Module. Differences from torch,
all forced by immutable arrays: the averaging functions *return* the new averages instead of
updating tensors in place, and ``multi_avg_fn`` is called once with all the averaged arrays
(torch calls it once per device and dtype).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp

from optim_jax import averaging, schedules
from optim_jax.base import PyTree
from optim_jax.stateful import nnx_bridge
from optim_jax.stateful.lr_scheduler import LRScheduler
from optim_jax.stateful.optimizer import Optimizer
from optim_jax.sharding import place_state

__all__ = [
    "AveragedModel",
    "SWALR",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``avg_fn(averaged_param, current_param, num_averaged) -> new averaged_param``."""

MultiAvgFn = Callable[[list, list, jax.Array], Sequence[jax.Array]]
"""``multi_avg_fn(averaged_params, current_params, num_averaged) -> new averaged_params``."""


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """The exponential moving average over all params, for ``AveragedModel(multi_avg_fn=)``.

    .. math::
        W^{EMA}_0 = W^{model}_0, \\qquad
        W^{EMA}_{t+1} = \\delta W^{EMA}_t + (1 - \\delta) W^{model}_{t+1}

    (the first step, a copy, is :class:`AveragedModel`'s); :func:`optim_jax.ema_average`.

    Args:
      decay: :math:`\\delta`, in [0, 1].

    Returns:
      ``ema_update(ema_params, current_params, num_averaged) -> new ema_params`` (lists of
      arrays, or any pytrees structured alike), jittable.

    Raises:
      ValueError: torch's message, for a ``decay`` outside [0, 1].
    """
    averaging.check_decay(decay)

    def ema_update(ema_params: PyTree, current_params: PyTree, num_averaged: Any) -> PyTree:
        return averaging.ema_average(ema_params, current_params, decay, count=num_averaged)

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """The uniform average over all params, for ``AveragedModel(multi_avg_fn=)``.

    :math:`\\bar W_{n+1} = \\bar W_n + (W - \\bar W_n) / (n + 1)`; :func:`optim_jax.swa_average`.

    Returns:
      ``swa_update(averaged_params, current_params, num_averaged) -> new averaged_params``.
    """
    return averaging.swa_average


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """The exponential moving average of one param, for ``AveragedModel(avg_fn=)``.

    torch's formula, ``decay * ema_param + (1 - decay) * current_param``, rounded as torch
    rounds it (:func:`optim_jax.averaging.ema_formula`), so it may differ from
    :func:`get_ema_multi_avg_fn`'s ``lerp`` in the last bit, as torch's two do. An integer param
    is averaged in float32 (and truncated back into it by :class:`AveragedModel`).

    Args:
      decay: the decay, in [0, 1].

    Returns:
      ``ema_update(ema_param, current_param, num_averaged) -> new ema_param``.

    Raises:
      ValueError: torch's message, for a ``decay`` outside [0, 1].
    """
    averaging.check_decay(decay)

    def ema_update(ema_param: jax.Array, current_param: jax.Array, num_averaged: Any) -> jax.Array:
        return averaging.ema_formula(ema_param, current_param, decay,
                                     _result_dtype(ema_param, current_param), count=num_averaged)

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    """The uniform average of one param, for ``AveragedModel(avg_fn=)``.

    torch's formula, ``averaged_param + (current_param - averaged_param) / (num_averaged + 1)``,
    rounded as torch rounds it (:func:`optim_jax.averaging.swa_formula`): what torch's
    ``AveragedModel`` computes on CPU by default, where :class:`AveragedModel`'s default is
    :func:`get_swa_multi_avg_fn`'s ``lerp`` (torch's on GPU; the two differ in the last bit).

    Returns:
      ``swa_update(averaged_param, current_param, num_averaged) -> new averaged_param``.
    """

    def swa_update(averaged_param: jax.Array, current_param: jax.Array,
                   num_averaged: Any) -> jax.Array:
        return averaging.swa_formula(averaged_param, current_param, num_averaged,
                                     _result_dtype(averaged_param, current_param))

    return swa_update


def _result_dtype(average: jax.Array, current: jax.Array) -> Any:
    """The dtype torch's arithmetic on the two gives: the promoted float, float32 for integers
    (torch's default dtype)."""
    dtype = jnp.promote_types(average.dtype, current.dtype)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32


def _average_fn(avg_fn: AvgFn | None, multi_avg_fn: MultiAvgFn | None) -> averaging.AverageFn:
    """The function folding a list of current params into the list of averages."""
    if avg_fn is not None:
        return lambda average, params, count: [
            avg_fn(a, p, count) for a, p in zip(average, params)
        ]
    if multi_avg_fn is None:
        return averaging.swa_average

    def call(average: list, params: list, count: jax.Array) -> list:
        new = multi_avg_fn(average, params, count)
        if new is None:
            raise TypeError(
                "multi_avg_fn must return the new averaged params (JAX arrays are immutable, "
                "so they cannot be updated in place as torch's are)"
            )
        return list(new)

    return call


def _nnx_filters(use_buffers: bool) -> tuple[Any, Any]:
    """The nnx filters of the averaged variables and of those copied from the model.

    Params are averaged; the other variables (torch's buffers: batch statistics) too with
    ``use_buffers``, else copied. RNG state is neither: each copy keeps its own.
    """
    from flax import nnx

    buffers = nnx.Not(nnx.Any(nnx.Param, nnx.RngState))
    if use_buffers:
        return nnx.Any(nnx.Param, buffers), nnx.Nothing
    return nnx.Param, buffers


def _describe_mismatch(what: str, expected: PyTree, given: PyTree) -> str | None:
    """Where ``given``'s structure or leaf shapes differ from ``expected``'s, or None."""
    expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
    given_leaves, given_def = jax.tree_util.tree_flatten_with_path(given)
    if expected_def != given_def:
        paths = [{jax.tree_util.keystr(path) for path, _ in leaves}
                 for leaves in (expected_leaves, given_leaves)]
        differing = sorted(paths[0] ^ paths[1])
        where = f" (first leaf in one only: {what}{differing[0]})" if differing else ""
        return f"{what} is not structured as the averaged model{where}"
    for (path, old), (_, new) in zip(expected_leaves, given_leaves):
        if jnp.shape(old) != jnp.shape(new):
            return (
                f"{what}{jax.tree_util.keystr(path)} has shape {jnp.shape(new)}, the averaged "
                f"model's {jnp.shape(old)}"
            )
    return None


class AveragedModel:
    """torch's ``AveragedModel``: a running average (SWA, EMA) of a model's params.

    The average lives in :attr:`module`, a copy of ``model`` made at construction: a pytree
    when ``model`` is a params pytree (such as ``opt.params``), an nnx Module when it is one
    (callable: ``swa_model(x)`` is ``swa_model.module(x)``). :meth:`update_parameters` folds
    the model's current params into it: the first call copies them, the later ones call the
    averaging function with the number of models averaged so far (:attr:`n_averaged`).

    For an nnx Module, the ``nnx.Param`` variables are averaged. The other variables, torch's
    buffers (batch statistics), are averaged too with ``use_buffers=True``, else copied from
    ``model`` at each update (then recompute them with :func:`update_bn`); RNG state is left
    alone.

    Each update is one compiled call (compiled once: :attr:`n_averaged` is an argument) that
    takes the old average as a donated buffer, so the arrays of :attr:`module` belong to the
    averaged model: one read before an update is deleted by it (read it again after). The
    average keeps the model's shardings, or takes ``device``.

    Args:
      model: a params pytree or an nnx Module.
      avg_fn: ``avg_fn(averaged_param, current_param, num_averaged) -> new averaged_param``,
        applied to every param (jittable; :func:`get_ema_avg_fn`, :func:`get_swa_avg_fn`).
      multi_avg_fn: ``multi_avg_fn(averaged_params, current_params, num_averaged) -> new
        averaged_params``: lists of all the averaged arrays at once (:func:`get_ema_multi_avg_fn`,
        :func:`get_swa_multi_avg_fn`). Unlike torch's, it returns the new values. With neither,
        the uniform average (SWA) as :func:`get_swa_multi_avg_fn` computes it (torch's default
        on GPU; on CPU torch's default is :func:`get_swa_avg_fn`, different in the last bit).
      use_buffers: average the nnx Module's non-param variables too.
      device: where to place the average (a device or sharding); by default the model's
        placement. Each update then moves the model's params there first.

    Attributes:
      module: the averaged copy.
      n_averaged: the number of models averaged, an int32 scalar array.

    Raises:
      AssertionError: torch's, if both ``avg_fn`` and ``multi_avg_fn`` are given.
    """

    def __init__(
        self,
        model: Any,
        avg_fn: AvgFn | None = None,
        multi_avg_fn: MultiAvgFn | None = None,
        use_buffers: bool = False,
        *,
        device: Any = None,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers
        self.device = device
        self._is_module = nnx_bridge.is_module(model)
        graphdef, state = nnx_bridge.split(model) if self._is_module else (None, model)
        # A copy committed to the model's devices (or to ``device``), the count beside it: the
        # first update then compiles the program the later ones reuse.
        state = jax.device_put(state)  # NumPy leaves to arrays; arrays unchanged
        placement = jax.tree.map(lambda x: x.sharding, state) if device is None else device
        state = jax.device_put(state, placement, may_alias=False)
        self.module = nnx_bridge.merge(graphdef, state) if self._is_module else state
        self.n_averaged = place_state(jnp.zeros([], jnp.int32), state)
        averager = averaging.weight_averaging(_average_fn(avg_fn, multi_avg_fn))

        def update(state, synced, current, current_synced):
            del synced  # the old copies, donated so that their buffers take the new ones
            # Copies, not the model's own arrays: the next update donates them.
            return averager.update(current, state), jax.device_put(current_synced, may_alias=False)

        self._update = jax.jit(update, donate_argnums=(0, 1))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The averaged module's forward pass (nnx Modules only)."""
        if not self._is_module:
            raise TypeError(
                "an AveragedModel over a params pytree is not callable: apply your model "
                "function to swa_model.module"
            )
        return self.module(*args, **kwargs)

    def _variables(self, model: Any) -> tuple[Any, Any]:
        """``model``'s averaged and copied parts: nnx States for a Module, else (tree, [])."""
        if not self._is_module:
            return model, []
        from flax import nnx

        return nnx.state(model, *_nnx_filters(self.use_buffers))

    def update_parameters(self, model: Any) -> None:
        """Folds ``model``'s params into the average (the first call copies them).

        Args:
          model: structured as the model given at construction: a params pytree, or an nnx
            Module.

        Raises:
          ValueError: naming the first difference, if ``model``'s structure or shapes differ.
        """
        if nnx_bridge.is_module(model) != self._is_module:
            kinds = ("a params pytree", "an nnx Module")
            raise ValueError(
                f"update_parameters got {kinds[not self._is_module]}, the averaged model holds "
                f"{kinds[self._is_module]}"
            )
        averaged, synced = self._variables(self.module)
        current, current_synced = self._variables(model)
        mismatch = _describe_mismatch("model", averaged, current) or _describe_mismatch(
            "model", synced, current_synced)
        if mismatch is not None:
            raise ValueError(mismatch)
        current, current_synced = jax.tree.leaves(current), jax.tree.leaves(current_synced)
        if self.device is not None:
            current, current_synced = jax.device_put((current, current_synced), self.device)
        state = averaging.AveragingState(jax.tree.leaves(averaged), self.n_averaged)
        state, new_synced = self._update(state, jax.tree.leaves(synced), current, current_synced)
        self.n_averaged = state.count
        if self._is_module:
            nnx_bridge.set_values(nnx_bridge.variables_of(averaged), state.average)
            nnx_bridge.set_values(nnx_bridge.variables_of(synced), new_synced)
        else:
            self.module = jax.tree.unflatten(jax.tree.structure(averaged), state.average)

    def _checkpointed(self) -> PyTree:
        """What :meth:`state_dict` saves of :attr:`module`: a pytree, or a pure dict of the
        module's variables other than RNG state (key arrays do not serialise)."""
        if not self._is_module:
            return self.module
        from flax import nnx

        return nnx.to_pure_dict(nnx.state(self.module, nnx.Not(nnx.RngState)))

    def state_dict(self) -> dict[str, Any]:
        """The averaged model's state: ``{'module': ..., 'n_averaged': ...}``.

        ``'module'`` is the averaged pytree, or for an nnx Module a nested dict of its variables'
        values (params and batch statistics; not RNG state). The arrays are copies, valid after
        later updates; the dict serialises with ``flax.serialization`` (msgpack) and orbax. As in
        torch, ``avg_fn`` and ``multi_avg_fn`` are not saved.

        Returns:
          The dict, of arrays and nested dicts (or the pytree's containers).
        """
        return jax.device_put(
            {"module": self._checkpointed(), "n_averaged": self.n_averaged}, may_alias=False
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the average and the count from ``state_dict``, a :meth:`state_dict` output.

        The values are copied onto the current arrays' placements and dtypes; ``state_dict``
        stays valid.

        Raises:
          ValueError: naming the first difference, if the keys, structure or shapes differ (the
            averaged model is then left unchanged).
        """
        if set(state_dict) != {"module", "n_averaged"}:
            raise ValueError(
                f"state_dict has keys {sorted(state_dict)}, expected ['module', 'n_averaged']"
            )
        current = self._checkpointed()
        mismatch = _describe_mismatch("state_dict['module']", current, state_dict["module"])
        if mismatch is not None:
            raise ValueError(mismatch)
        old = jax.tree.leaves(current)
        values = jax.tree.leaves(state_dict["module"])
        values = [jnp.asarray(v, o.dtype) if jnp.result_type(v) != o.dtype else v
                  for v, o in zip(values, old)]
        values = jax.device_put(values, [o.sharding for o in old], may_alias=False)
        loaded = jax.tree.unflatten(jax.tree.structure(current), values)
        if self._is_module:
            from flax import nnx

            state = nnx.state(self.module, nnx.Not(nnx.RngState))
            nnx.replace_by_pure_dict(state, loaded)
            nnx.update(self.module, state)
        else:
            self.module = loaded
        self.n_averaged = place_state(jnp.asarray(state_dict["n_averaged"], jnp.int32), values)


class SWALR(LRScheduler):
    """torch's ``SWALR``: anneals each group's lr to a fixed ``swa_lr``, then holds it.

    At step :math:`t` (``step()`` calls since construction), with :math:`\\alpha_t` of
    :func:`optim_jax.schedules.swa_annealing` (cosine or linear over ``anneal_epochs`` steps):

    .. math::
        \\eta_t = \\eta_{swa} \\alpha_t + \\eta_0 (1 - \\alpha_t)

    where :math:`\\eta_0` is the group's ``lr`` when the annealing starts: as torch's class, it
    keeps no base rate but recovers it from the current ``lr`` at each step, by inverting the
    previous step's interpolation, so it starts from whatever rate another scheduler left and
    follows outside changes of ``lr`` as torch's does (same floats as torch's, to the bit).
    :func:`optim_jax.schedules.swalr` is the pure schedule. Typical use: build it with the
    other scheduler, step that one before the SWA phase and this one during it.

    Args:
      optimizer: the wrapped optimizer.
      swa_lr: the rate annealed to: one for all groups, or a list with one per group (stored
        as each group's ``'swa_lr'``).
      anneal_epochs: the number of steps of the annealing (an int >= 0; 0: ``swa_lr`` at once).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      last_epoch: the index of the last step; -1 starts the schedule.

    Raises:
      ValueError: torch's messages, for a list of ``swa_lr`` of the wrong length, an unknown
        strategy or a negative ``anneal_epochs``; the groups are then left unchanged.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | Sequence[float],
        anneal_epochs: int = 10,
        anneal_strategy: str = "cos",
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        groups = optimizer.param_groups
        if not isinstance(swa_lr, (list, tuple)):
            swa_lr = [swa_lr] * len(groups)
        elif len(swa_lr) != len(groups):
            raise ValueError(
                "swa_lr must have the same length as optimizer.param_groups. "
                f"swa_lr has {len(swa_lr)} values, param_groups has {len(groups)}."
            )
        self._annealing = schedules.swa_annealing(anneal_epochs, anneal_strategy)
        for group, lr in zip(groups, swa_lr):
            group["swa_lr"] = lr
        self._anneal_strategy = anneal_strategy
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The next rates (use :meth:`get_last_lr` to read the current ones).

        Returns:
          One learning rate per param group.
        """
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use "
                          "`get_last_lr()`.", UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self._annealing(step - 1)
        lrs = []
        for group in self.optimizer.param_groups:
            swa_lr = group["swa_lr"]
            start = swa_lr if prev_alpha == 1 else (
                (group["lr"] - prev_alpha * swa_lr) / (1 - prev_alpha))
            lrs.append(
                schedules.swalr(start, swa_lr, self.anneal_epochs, self._anneal_strategy)(step)
            )
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer and the annealing function.

        Returns:
          A dict with torch's keys, e.g. ``'anneal_epochs'``, ``'_anneal_strategy'``,
          ``'last_epoch'``, ``'_last_lr'``.
        """
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_annealing")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the scheduler from ``state_dict``, an output of :meth:`state_dict`."""
        self.__dict__.update(state_dict)
        self._annealing = schedules.swa_annealing(self.anneal_epochs, self._anneal_strategy)


def _training_modes(module: Any) -> list[tuple[Any, str, Any]]:
    """``(submodule, attribute, value)`` of every ``deterministic`` / ``use_running_average``
    attribute, the flags ``Module.train()`` sets, to restore them afterwards."""
    from flax import nnx

    return [
        (sub, name, getattr(sub, name))
        for _, sub in nnx.iter_modules(module)
        for name in ("deterministic", "use_running_average")
        if hasattr(sub, name)
    ]


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=2)
def _bn_batch(graphdef: Any, stat_paths: frozenset, stats: Any, params: Any, others: Any,
              x: jax.Array, count: jax.Array) -> tuple[Any, Any]:
    """The forward pass on one batch; the batch norms' statistics of this batch folded into
    the average of ``count`` batches (their momentum is 0, so the pass leaves the batch's)."""
    from flax import nnx

    # A copy: merged variables would otherwise be ``stats``' own, and the pass would overwrite
    # the average so far.
    module = nnx.merge(graphdef, stats, params, others, copy=True)
    module(x)
    _, batch_stats, _, others = nnx.split(
        module, lambda path, _: path in stat_paths, nnx.Param, ...)
    return averaging.swa_average(stats, batch_stats, count), others


def update_bn(loader: Iterable[Any], model: Any, device: Any = None) -> None:
    """Recomputes the running statistics of an nnx Module's ``BatchNorm`` layers over ``loader``.

    torch's ``update_bn``: one pass over the data in training mode with the batch norms'
    statistics reset and averaged cumulatively (torch's ``momentum=None``): after :math:`k`
    batches, each running mean (variance) is the plain average of the :math:`k` batch means
    (variances). Call it on the averaged model after the last :meth:`AveragedModel.update_parameters`,
    whose averaged weights make the statistics the model was trained with stale.

    The variance of each batch is the one ``nnx.BatchNorm`` itself records, the biased one;
    torch's ``BatchNorm`` records the unbiased one, larger by :math:`m / (m - 1)` for a batch of
    :math:`m` values per feature. Each batch is one compiled call (compiled once per input
    shape and model structure). As ``model.train()`` in torch, every submodule's
    ``deterministic`` and ``use_running_average`` flags are set for training during the pass
    (dropout draws from the module's RNG streams), and restored afterwards, as are the momenta.
    A ``BatchNorm`` called with an explicit ``use_running_average=True`` keeps its statistics.

    Args:
      loader: an iterable of batches: arrays, or tuples (lists) whose first element is the
        model's input.
      model: an nnx Module, or an :class:`AveragedModel` over one.
      device: if given, each input is placed there (a device or sharding) first.

    Raises:
      TypeError: if ``model`` is not an nnx Module (nor an AveragedModel over one).
    """
    module = model.module if isinstance(model, AveragedModel) else model
    if not nnx_bridge.is_module(module):
        raise TypeError(
            f"update_bn needs an nnx Module (or an AveragedModel over one), got "
            f"{type(module).__name__}"
        )
    from flax import nnx

    norms = {path: sub for path, sub in nnx.iter_modules(module)
             if isinstance(sub, nnx.BatchNorm)}
    if not norms:
        return
    for norm in norms.values():  # torch's reset_running_stats
        norm.mean.set_value(jnp.zeros_like(norm.mean.get_value()))
        norm.var.set_value(jnp.ones_like(norm.var.get_value()))
    modes = _training_modes(module)
    momenta = {path: norm.momentum for path, norm in norms.items()}
    module.train()
    for norm in norms.values():
        norm.momentum = 0.0
    try:
        stat_paths = frozenset(path + (name,) for path in norms for name in ("mean", "var"))
        graphdef, stats, params, others = nnx.split(
            module, lambda path, _: path in stat_paths, nnx.Param, ...)
        for count, batch in enumerate(loader):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                x = jax.device_put(x, device)
            stats, others = _bn_batch(graphdef, stat_paths, stats, params, others, x, count)
        nnx.update(module, stats, others)
    finally:
        for path, norm in norms.items():
            norm.momentum = momenta[path]
        for sub, name, value in modes:
            setattr(sub, name, value)
