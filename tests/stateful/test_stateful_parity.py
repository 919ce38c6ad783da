"""Every algorithm's torch-style class against torch's class: two param groups with different
options over a nested pytree, 25 steps; and a state_dict round trip that continues exactly."""

import jax
import numpy as np
import pytest

from helpers.algorithms import ALGORITHMS, GROUP_OPTIONS
from helpers.trajectories import STEPS, round_trip_continues_exactly, stateful_class
from helpers.trees import like_tree, random_tree


def split(tree):
    return tree["layers"], {"scalar": tree["scalar"], "vector": tree["vector"]}


@pytest.mark.parametrize("name", list(GROUP_OPTIONS))
def test_class_with_two_groups_matches_torch(torch_module, name):
    torch = torch_module
    defaults, overrides = GROUP_OPTIONS[name]
    rng = np.random.default_rng(11)
    params = random_tree(rng)
    first, second = split(params)
    opt = stateful_class(name)([{"params": first}, {"params": second, **overrides}], **defaults)
    tensors = [[torch.tensor(np.array(x), requires_grad=True) for x in jax.tree.leaves(t)]
               for t in (first, second)]
    theirs = getattr(torch.optim, ALGORITHMS[name][1])(
        [{"params": tensors[0]}, {"params": tensors[1], **overrides}], **defaults, foreach=False)
    for step in range(STEPS):
        grads = like_tree(rng, params)
        g_first, g_second = split(grads)
        opt.grad = [g_first, g_second]
        opt.step()
        for t, g in zip(tensors[0] + tensors[1], jax.tree.leaves(g_first) + jax.tree.leaves(g_second)):
            t.grad = torch.tensor(np.array(g))
        theirs.step()
        ours = jax.tree.leaves(opt.params)
        for a, b in zip(ours, [t.detach().numpy() for t in tensors[0] + tensors[1]]):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.parametrize("name", list(GROUP_OPTIONS))
def test_state_dict_round_trip_continues_exactly(name):
    defaults, overrides = GROUP_OPTIONS[name]
    rng = np.random.default_rng(12)
    params = random_tree(rng)

    def make(params):
        first, second = split(jax.tree.map(np.copy, params))
        return stateful_class(name)([{"params": first}, {"params": second, **overrides}], **defaults)

    round_trip_continues_exactly(make, split, params, [like_tree(rng, params) for _ in range(6)])
