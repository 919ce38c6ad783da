"""The torch-style classes of the algorithms: each a few lines over its pure factory.

``Adam(params, lr=1e-3, ...)`` takes exactly :func:`optim_jax.adam`'s arguments in torch's order
(the constructor is made from the factory's signature, see ``Optimizer``), plus torch's
``foreach``, ``fused``, ``capturable`` and ``differentiable``, accepted and ignored. The update
rule, with its math and references, is the factory's docstring. Each class says which options
shape the compiled program (``static_zeros``, ``static_args``) and torch's per-parameter state
names. As with every optimizer here, the constructor copies the arrays it is given and each
step donates the optimizer's own (``help(optim_jax.Optimizer)``).
"""

from __future__ import annotations

from optim_jax.adadelta import adadelta
from optim_jax.adafactor import adafactor
from optim_jax.adagrad import adagrad
from optim_jax.adam import adam
from optim_jax.adamax import adamax
from optim_jax.adamw import adamw
from optim_jax.asgd import asgd
from optim_jax.muon import muon
from optim_jax.nadam import nadam
from optim_jax.radam import radam
from optim_jax.rmsprop import rmsprop
from optim_jax.rprop import rprop
from optim_jax.sgd import sgd
from optim_jax.sparse_adam import sparse_adam, reject_unsupported
from optim_jax.stateful.optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD over JAX pytrees: ``SGD(params, lr=1e-3, momentum=0, ...)``.

    Arguments as :func:`sgd` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter, when momentum is non-zero: ``momentum_buffer`` and ``step`` (momentum steps
    taken; 0 means the buffer starts from the next gradient, as torch's ``None`` buffer does).
    """

    transform = staticmethod(sgd)
    contiguous = True
    static_zeros = ("momentum", "weight_decay")


class Adam(Optimizer):
    """torch.optim.Adam over JAX pytrees: ``Adam(params, lr=1e-3, betas=(0.9, 0.999), ...)``.

    Arguments as :func:`adam` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with AMSGrad, ``max_exp_avg_sq``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optim_jax
      >>> opt = optim_jax.Adam({'w': jnp.array([1.0, -2.0])}, lr=0.1)
      >>> loss = opt.step(lambda p: jnp.sum(p['w'] ** 2))  # differentiates, then steps
      >>> print(opt.params['w'].round(4))
      [ 0.9 -1.9]
      >>> sorted(opt.state[0])
      ['exp_avg', 'exp_avg_sq', 'step']
    """

    transform = staticmethod(adam)
    contiguous = True
    static_zeros = ("weight_decay",)


class AdamW(Optimizer):
    """torch.optim.AdamW over JAX pytrees: Adam with decoupled weight decay (default 1e-2).

    Arguments as :func:`adamw` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter as :class:`optim_jax.Adam`'s: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with
    AMSGrad, ``max_exp_avg_sq``.
    """

    transform = staticmethod(adamw)
    contiguous = True
    static_zeros = ("weight_decay",)


class Adadelta(Optimizer):
    """torch.optim.Adadelta over JAX pytrees: ``Adadelta(params, lr=1.0, rho=0.9, ...)``.

    Arguments as :func:`adadelta` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``square_avg`` and ``acc_delta``.
    """

    transform = staticmethod(adadelta)
    contiguous = True
    static_zeros = ("weight_decay",)


class Adafactor(Optimizer):
    """torch.optim.Adafactor over JAX pytrees: ``Adafactor(params, lr=1e-2, ...)``.

    ``Adafactor(params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
    *, maximize=False)``: arguments as :func:`adafactor` (which also gives the update rule);
    ``params`` as :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``,
    ``capturable`` and ``differentiable`` are accepted and ignored (every step is one compiled
    XLA program). State per parameter: ``step`` and ``row_var``/``col_var`` (two or more
    dimensions) or ``variance`` (scalars, vectors); the unused ones are empty ``(0,)`` arrays.
    """

    transform = staticmethod(adafactor)
    static_zeros = ("weight_decay",)


class Adagrad(Optimizer):
    """torch.optim.Adagrad over JAX pytrees: ``Adagrad(params, lr=1e-2, lr_decay=0, ...)``.

    Arguments as :func:`adagrad` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step`` and ``sum``. As in torch, every group's ``sum`` starts at the
    constructor's ``initial_accumulator_value``; a group's own value of it is kept in
    ``param_groups`` but not used.
    """

    transform = staticmethod(adagrad)
    contiguous = True
    static_zeros = ("weight_decay",)
    # torch.optim.Adagrad fills `sum` from the constructor's value, whatever the group says.
    init_from_defaults = ("initial_accumulator_value",)


class Adamax(Optimizer):
    """torch.optim.Adamax over JAX pytrees: ``Adamax(params, lr=2e-3, betas=(0.9, 0.999), ...)``.

    Arguments as :func:`adamax` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``exp_avg`` and ``exp_inf``.
    """

    transform = staticmethod(adamax)
    contiguous = True
    static_zeros = ("weight_decay",)


class ASGD(Optimizer):
    """torch.optim.ASGD over JAX pytrees: ``ASGD(params, lr=1e-2, lambd=1e-4, alpha=0.75, ...)``.

    Arguments as :func:`asgd` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``eta``, ``mu`` and ``ax``, the averaged parameter
    (``opt.state[i]['ax']``).
    """

    transform = staticmethod(asgd)
    contiguous = True
    static_zeros = ("weight_decay",)


class Muon(Optimizer):
    """torch.optim.Muon over JAX pytrees of 2-d parameters: ``Muon(params, lr=1e-3, ...)``.

    ``Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None)``:
    arguments as :func:`muon` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them (every leaf 2-d). torch's ``foreach``, ``fused``,
    ``capturable`` and ``differentiable`` are accepted and ignored (every step is one compiled
    XLA program). State per parameter: ``momentum_buffer``. Changing ``ns_steps`` recompiles.
    """

    transform = staticmethod(muon)
    static_zeros = ("weight_decay",)
    static_args = ("ns_steps",)


class NAdam(Optimizer):
    """torch.optim.NAdam over JAX pytrees: ``NAdam(params, lr=2e-3, betas=(0.9, 0.999), ...)``.

    Arguments as :func:`nadam` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``mu_product``, ``exp_avg`` and ``exp_avg_sq``.
    """

    transform = staticmethod(nadam)
    contiguous = True
    static_zeros = ("weight_decay",)


class RAdam(Optimizer):
    """torch.optim.RAdam over JAX pytrees: ``RAdam(params, lr=1e-3, betas=(0.9, 0.999), ...)``.

    Arguments as :func:`radam` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``exp_avg`` and ``exp_avg_sq``.
    """

    transform = staticmethod(radam)
    contiguous = True
    static_zeros = ("weight_decay",)


class RMSprop(Optimizer):
    """torch.optim.RMSprop over JAX pytrees: ``RMSprop(params, lr=1e-2, alpha=0.99, ...)``.

    Arguments as :func:`rmsprop` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``square_avg`` and, when used, ``momentum_buffer`` and
    ``grad_avg``.
    """

    transform = staticmethod(rmsprop)
    contiguous = True
    static_zeros = ("momentum", "weight_decay")


class Rprop(Optimizer):
    """torch.optim.Rprop over JAX pytrees: ``Rprop(params, lr=1e-2, etas=(0.5, 1.2), ...)``.

    Arguments as :func:`rprop` (which also gives the update rule); ``params`` as
    :class:`optim_jax.Optimizer` takes them. torch's ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and ignored (every step is one compiled XLA program). State
    per parameter: ``step``, ``prev`` and ``step_size``. As in torch, ``lr`` only sets the initial
    step sizes: changing a group's ``lr`` after its state exists has no effect.
    """

    transform = staticmethod(rprop)
    contiguous = True


class SparseAdam(Optimizer):
    """torch.optim.SparseAdam over JAX pytrees: ``SparseAdam(params, lr=1e-3, ...)``.

    ``SparseAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False)``; zero
    gradient entries stand for absent sparse entries. Arguments as :func:`sparse_adam` (which
    also gives the update rule); ``params`` as :class:`optim_jax.Optimizer` takes them. torch's
    ``foreach``, ``fused``, ``capturable`` and ``differentiable`` are accepted and ignored
    (every step is one compiled XLA program). State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``.
    """

    transform = staticmethod(sparse_adam)
    contiguous = True

    def _add_group(self, param_group):
        # torch names the offending parameter by [group index, index in group]
        if isinstance(param_group, dict):
            reject_unsupported(param_group.get("params"), len(self.param_groups))
        super()._add_group(param_group)
