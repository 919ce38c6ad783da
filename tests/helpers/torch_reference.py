"""Runs torch.optim on the leaves of a pytree, side by side with optim_jax."""

from __future__ import annotations

import jax
import numpy as np


def run_torch(torch, make_optimizer, params, grads_per_step, to_grad=None, lrs=None):
    """torch's params (pytrees of numpy arrays) after each step.

    Args:
      torch: the torch module.
      make_optimizer: builds the optimizer from the list of leaf tensors.
      params: initial pytree of numpy arrays.
      grads_per_step: one gradient pytree per step.
      to_grad: turns a numpy gradient into the tensor's ``.grad`` (default: a dense tensor).
      lrs: optional lr to set on the first group before each step (schedule parity).
    """
    to_grad = to_grad or (lambda g: torch.tensor(np.array(g)))
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
    optimizer = make_optimizer(tensors)
    trajectory = []
    for step, grads in enumerate(grads_per_step):
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        for t, g in zip(tensors, jax.tree.leaves(grads)):
            t.grad = to_grad(g)
        optimizer.step()
        trajectory.append(treedef.unflatten([t.detach().numpy().copy() for t in tensors]))
    return trajectory


def torch_trajectory(torch, optimizer_cls, kwargs, params, grads_per_step, lr_per_step=None):
    """``run_torch`` with ``optimizer_cls(tensors, **kwargs, foreach=False)``: torch's
    single-tensor reference implementation."""
    lrs = None if lr_per_step is None else [float(lr) for lr in lr_per_step]
    return run_torch(torch, lambda tensors: optimizer_cls(tensors, **kwargs, foreach=False),
                     params, grads_per_step, lrs=lrs)


def sparse_to_torch(torch):
    """numpy gradient -> torch sparse COO gradient holding its non-zero entries."""
    return lambda g: torch.tensor(np.array(g)).to_sparse()
