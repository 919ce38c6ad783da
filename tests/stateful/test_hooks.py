"""torch.optim's hooks: step, state_dict and load_state_dict hooks, per optimizer and global."""

import jax.numpy as jnp

import optim_jax as optim


def loss(p):
    return jnp.sum(p["w"] ** 2)


def make():
    return optim.SGD({"w": jnp.ones(2)}, lr=0.1)


def test_one_hook_registered_thrice_has_three_independent_handles():
    opt, calls = make(), []

    def hook(optimizer, args, kwargs):
        calls.append(1)

    handles = [opt.register_step_pre_hook(hook) for _ in range(3)]
    handles[0].remove()
    opt.step(loss)
    assert len(calls) == 2  # torch: the two left fire
    handles[2].remove()
    opt.step(loss)
    assert len(calls) == 3  # removing the third left the second in place


def test_global_step_hooks_run_before_the_optimizers_own():
    opt, order = make(), []
    own_pre = opt.register_step_pre_hook(lambda o, a, k: order.append("own pre"))
    opt.register_step_post_hook(lambda o, a, k: order.append("own post"))
    with optim.register_optimizer_step_pre_hook(lambda o, a, k: order.append("global pre")), \
            optim.register_optimizer_step_post_hook(lambda o, a, k: order.append("global post")):
        opt.step(loss)
    assert order == ["global pre", "own pre", "global post", "own post"]
    own_pre.remove()
    order.clear()
    optim.Adam({"w": jnp.ones(2)}).step(loss)  # the global ones are gone
    opt.step(loss)
    assert order == ["own post"]


def test_state_dict_hooks_can_observe_and_replace():
    opt, seen = make(), []
    opt.register_state_dict_pre_hook(lambda o: seen.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    opt.register_state_dict_post_hook(lambda o, sd: seen.append(sorted(sd)), prepend=True)
    saved = opt.state_dict()
    assert saved["extra"] == 1
    assert seen == ["pre", ["param_groups", "state"]]  # the prepended hook saw the plain dict


def test_load_state_dict_hooks_can_rewrite_the_dict_before_loading():
    opt, seen = make(), []
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = 0.5

    def rename(optimizer, state_dict):
        state_dict = dict(state_dict)
        state_dict["param_groups"] = [dict(g, lr=0.25) for g in state_dict["param_groups"]]
        return state_dict

    opt.register_load_state_dict_pre_hook(rename)
    opt.register_load_state_dict_post_hook(lambda o: seen.append(o.param_groups[0]["lr"]))
    opt.load_state_dict(saved)
    assert seen == [0.25]
