"""Every algorithm's torch-style class against torch's class: two param groups with different
options over a nested pytree, 25 steps; and a state_dict round trip that continues exactly."""

import flax.serialization
import jax
import numpy as np
import pytest

import optim_jax as optim

from helpers.algorithms import ALGORITHMS, GROUP_OPTIONS
from helpers.trees import like_tree, random_tree

STEPS = 25


def stateful_class(name):
    """The CapWords class of the algorithm (torch's name, ``optim_jax.SGD``)."""
    return getattr(optim, ALGORITHMS[name][1])


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
    grads = [like_tree(rng, params) for _ in range(6)]

    def make():
        first, second = split(jax.tree.map(np.copy, params))
        return stateful_class(name)([{"params": first}, {"params": second, **overrides}], **defaults)

    def step(opt, g):
        opt.grad = list(split(g))
        opt.step()

    original, restored = make(), make()
    for g in grads[:3]:
        step(original, g), step(restored, g)
    fresh = make()  # a different state of the same structure is overwritten by the load
    step(fresh, grads[5])
    fresh.param_groups[0]["params"] = restored.param_groups[0]["params"]
    fresh.param_groups[1]["params"] = restored.param_groups[1]["params"]
    fresh.load_state_dict(flax.serialization.msgpack_restore(flax.serialization.to_bytes(original.state_dict())))
    for g in grads[3:]:
        step(original, g), step(fresh, g)
    for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
