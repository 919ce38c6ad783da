"""torch's named parameters (torch >= 2.6): (name, array) pairs, names in param_groups and in
state_dict, torch's errors for mixed forms; a pytree's names are its key paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim


def test_named_list_steps_like_torch_and_reports_the_names(torch_module, x64):
    w, b = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([0.1, -0.2])
    opt = optim.Adam([("layer.weight", jnp.asarray(w)), ("layer.bias", jnp.asarray(b))], lr=0.1)
    tensors = [torch_module.tensor(w, requires_grad=True), torch_module.tensor(b, requires_grad=True)]
    reference = torch_module.optim.Adam(
        [("layer.weight", tensors[0]), ("layer.bias", tensors[1])], lr=0.1)

    def loss(params):
        named = dict(params)  # the closure gets the pairs, as given
        return jnp.sum(named["layer.weight"] ** 2) + jnp.sum(named["layer.bias"] ** 3)

    for _ in range(3):
        opt.step(loss)
        reference.zero_grad()
        (torch_module.sum(tensors[0] ** 2) + torch_module.sum(tensors[1] ** 3)).backward()
        reference.step()
    for (name, ours), theirs in zip(opt.params, tensors):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12)
    ours_sd, theirs_sd = opt.state_dict(), reference.state_dict()
    assert ours_sd["param_groups"][0]["param_names"] == theirs_sd["param_groups"][0]["param_names"]
    assert opt.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]
    opt.grad = [("layer.weight", jnp.ones((2, 2))), ("layer.bias", jnp.ones(2))]
    opt.step()


def test_named_groups_keep_their_names_through_a_state_dict(torch_module):
    opt = optim.SGD([{"params": [("a", jnp.ones(2))]}, {"params": [("b", jnp.ones(3))], "lr": 0.5}],
                    lr=0.1, momentum=0.9)
    opt.step(lambda groups: sum(jnp.sum(p**2) for g in groups for _, p in g))
    saved = opt.state_dict()
    assert [g["param_names"] for g in saved["param_groups"]] == [["a"], ["b"]]
    twin = optim.SGD([{"params": [("a", jnp.ones(2))]}, {"params": [("b", jnp.ones(3))], "lr": 0.5}],
                     lr=0.1, momentum=0.9)
    twin.load_state_dict(saved)
    assert twin.param_groups[1]["param_names"] == ["b"]


def test_a_pytrees_names_are_its_key_paths():
    opt = optim.AdamW({"encoder": {"w": jnp.ones(2)}, "head": [jnp.ones(3)]})
    names = opt.state_dict()["param_groups"][0]["param_names"]
    assert names == ["encoder.w", "head.0"]


@pytest.mark.parametrize("params, message", [
    ([("w", jnp.ones(2)), jnp.ones(3)], "Some param names are missing"),
    ([{"params": [("w", jnp.ones(2))]}, {"params": [jnp.ones(3)]}],
     "cannot add param group without names"),
    ([{"params": [jnp.ones(3)]}, {"params": [("w", jnp.ones(2))]}],
     "cannot add param group with names"),
])
def test_mixed_named_and_unnamed_fail_with_torchs_messages(torch_module, params, message):
    with pytest.raises(ValueError, match=message):
        optim.SGD(params, lr=0.1)

    def as_torch(value):
        if isinstance(value, jax.Array):
            return torch_module.tensor(np.asarray(value), requires_grad=True)
        if isinstance(value, tuple):
            return tuple(map(as_torch, value))
        if isinstance(value, dict):
            return {k: as_torch(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_torch(v) for v in value]
        return value

    with pytest.raises(ValueError, match=message):
        torch_module.optim.SGD(as_torch(params), lr=0.1)


def test_lbfgs_reports_duplicates_before_groups_like_torch(torch_module):
    a = jnp.ones(2)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.LBFGS([{"params": [a]}, {"params": [a]}])
    t = torch_module.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        torch_module.optim.LBFGS([{"params": [t]}, {"params": [t]}])
