"""Runs torch.optim on the leaves of a pytree, side by side with optim_jax."""

from __future__ import annotations

import jax
import numpy as np


def torch_trajectory(torch, optimizer_cls, kwargs, params, grads_per_step, lr_per_step=None):
    """Params (as pytrees of numpy arrays) after each torch step.

    Args:
      optimizer_cls: a torch.optim class; built with ``foreach=False`` (the single-tensor
        reference implementation).
      kwargs: its hyperparameters.
      params: initial pytree of numpy arrays.
      grads_per_step: one gradient pytree per step.
      lr_per_step: optional lr to set on the group before each step (schedule parity).
    """
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
    optimizer = optimizer_cls(tensors, **kwargs, foreach=False)
    trajectory = []
    for step, grads in enumerate(grads_per_step):
        if lr_per_step is not None:
            optimizer.param_groups[0]["lr"] = float(lr_per_step[step])
        for t, g in zip(tensors, jax.tree.leaves(grads)):
            t.grad = torch.tensor(np.array(g))
        optimizer.step()
        trajectory.append(treedef.unflatten([t.detach().numpy().copy() for t in tensors]))
    return trajectory
