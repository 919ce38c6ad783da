"""Weight-averaging references: a trajectory of pytrees and torch's AveragedModel over it."""

import jax
import numpy as np

from helpers.trees import like_tree, random_tree

UPDATES = 6


def snapshots(dtype=np.float64, count=UPDATES, seed=0):
    """A trajectory of param pytrees, as an optimizer would visit them."""
    rng = np.random.default_rng(seed)
    first = random_tree(rng, dtype)
    return [first] + [like_tree(rng, first) for _ in range(count - 1)]


def torch_average(torch, trajectory, **averaged_model_kwargs):
    """torch's AveragedModel over a ParameterList holding the leaves, after the trajectory."""
    leaves = [jax.tree.leaves(tree) for tree in trajectory]
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(x)) for x in leaves[0]])
    averaged = torch.optim.swa_utils.AveragedModel(model, **averaged_model_kwargs)
    for values in leaves:
        with torch.no_grad():
            for param, value in zip(model, values):
                param.copy_(torch.tensor(value))
        averaged.update_parameters(model)
    return [p.detach().numpy() for p in averaged.module]
