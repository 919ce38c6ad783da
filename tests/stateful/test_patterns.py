"""Param groups by name pattern, both faces, pytrees and nnx Modules, against torch's recipe
(a loop over named_parameters building a no-decay group)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optim_jax as optim

NO_DECAY = {r"(bias|scale)$": {"weight_decay": 0.0}}


def make_params(rng):
    return {
        "encoder": {"kernel": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)},
        "norm": {"scale": rng.standard_normal(4)},
        "head": {"kernel": rng.standard_normal((4, 2))},
    }


def loss(params, x):
    h = jnp.tanh(x @ params["encoder"]["kernel"] + params["encoder"]["bias"])
    return jnp.sum((h * params["norm"]["scale"]) @ params["head"]["kernel"]) ** 2


def test_pytree_groups_step_like_torchs_named_parameters_loop(torch_module, x64):
    rng = np.random.default_rng(0)
    params, x = make_params(rng), rng.standard_normal((5, 3))
    opt = optim.AdamW(optim.groups_by_pattern(jax.tree.map(jnp.asarray, params), NO_DECAY),
                      lr=0.05, weight_decay=0.3)
    assert [g["param_names"] for g in opt.param_groups] == [
        ["encoder.bias", "norm.scale"], ["encoder.kernel", "head.kernel"]]
    names = optim.leaf_names(params)
    tensors = {n: torch_module.tensor(v, requires_grad=True)
               for n, v in zip(names, jax.tree.leaves(params))}
    reference = torch_module.optim.AdamW(  # torch users' loop over named_parameters()
        [{"params": [t for n, t in tensors.items() if n.endswith(("bias", "scale"))],
          "weight_decay": 0.0},
         {"params": [t for n, t in tensors.items() if not n.endswith(("bias", "scale"))]}],
        lr=0.05, weight_decay=0.3)
    treedef = jax.tree.structure(params)
    for _ in range(3):
        opt.step(loss, x)
        reference.zero_grad()
        torch_params = treedef.unflatten([tensors[n] for n in names])
        h = torch_module.tanh(torch_module.tensor(x) @ torch_params["encoder"]["kernel"]
                              + torch_params["encoder"]["bias"])
        (torch_module.sum((h * torch_params["norm"]["scale"]) @ torch_params["head"]["kernel"]) ** 2).backward()
        reference.step()
    for name, ours in zip(names, jax.tree.leaves(opt.params)):
        np.testing.assert_allclose(ours, tensors[name].detach().numpy(), rtol=1e-10, atol=1e-12)
    assert jax.tree.structure(opt.params) == treedef  # the user's whole tree


def test_pure_labels_give_the_same_steps_as_the_stateful_groups(x64):
    rng = np.random.default_rng(1)
    params, x = jax.tree.map(jnp.asarray, make_params(rng)), jnp.asarray(rng.standard_normal((5, 3)))
    labels = optim.pattern_labels(params, NO_DECAY)
    tx = optim.partition({r"(bias|scale)$": optim.adamw(lr=0.05, weight_decay=0.0),
                          "default": optim.adamw(lr=0.05, weight_decay=0.3)}, labels)
    state, pure = tx.init(params), params
    opt = optim.AdamW(optim.groups_by_pattern(params, NO_DECAY), lr=0.05, weight_decay=0.3)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(pure, x), state, pure)
        pure = optim.apply_updates(pure, updates)
        opt.step(loss, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), opt.params, pure)


def test_nnx_module_groups_write_back_and_decay_only_the_kernels():
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.LayerNorm(4, rngs=nnx.Rngs(1)))
    reference = nnx.clone(model)
    opt = optim.AdamW(optim.groups_by_pattern(model, NO_DECAY), lr=0.1, weight_decay=0.5)
    assert opt.params is model
    assert opt.param_groups[0]["param_names"] == ["layers.0.bias", "layers.1.bias", "layers.1.scale"]
    # with a zero loss, only decoupled weight decay moves a parameter: kernels shrink, the rest not
    opt.step(lambda m: 0.0 * jnp.sum(m(jnp.ones((2, 3)))))
    np.testing.assert_allclose(model.layers[0].kernel.get_value(),
                               reference.layers[0].kernel.get_value() * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(model.layers[1].scale.get_value(),
                                  reference.layers[1].scale.get_value())
    np.testing.assert_array_equal(model.layers[0].bias.get_value(),
                                  reference.layers[0].bias.get_value())


@pytest.mark.parametrize("patterns", [{"bais$": {}}, {r"bias$": {}, "norms?\\.weight": {}}])
def test_a_pattern_that_matches_nothing_is_named(patterns):
    params = jax.tree.map(jnp.asarray, make_params(np.random.default_rng(2)))
    unused = [p for p in patterns if p != r"bias$"]
    with pytest.raises(ValueError, match="match no parameter") as error:
        optim.groups_by_pattern(params, patterns)
    assert f"patterns {unused!r}" in str(error.value)
