"""The stateful torch-style face against live torch.optim: param groups, step(), step(closure),
hyperparameter changes, add_param_group, compile counts, gradient accumulation, donation,
state_dict, and every error path."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.algorithms import ALGORITHMS

F32 = dict(rtol=1e-5, atol=1e-6)
CLASSES = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}


def model(rng):
    return {
        "base": {"w": rng.standard_normal((4, 3)).astype(np.float32),
                 "b": rng.standard_normal(3).astype(np.float32)},
        "classifier": {"w": rng.standard_normal((3, 2)).astype(np.float32),
                       "b": rng.standard_normal(2).astype(np.float32)},
    }


def poly_loss(params, batch, xp=jnp):
    """A smooth loss with the same float32 gradient in torch and JAX: sum c p^2/2 + d p + p^3/30."""
    total = 0.0
    for p, d in zip(jax.tree.leaves(params), jax.tree.leaves(batch)):
        total = total + xp.sum(0.5 * p * p + d * p + p * p * p / 30.0)
    return total


class TorchTwin:
    """torch.optim on the same leaves, grouped like the optim_jax optimizer."""

    def __init__(self, torch, cls_name, groups, defaults):
        self.torch = torch
        self.tensors = [[torch.tensor(np.array(x), requires_grad=True) for x in jax.tree.leaves(g.pop("params"))]
                        for g in groups]
        self.opt = getattr(torch.optim, cls_name)(
            [{"params": t, **g} for t, g in zip(self.tensors, groups)], **defaults, foreach=False)

    def flat(self):
        return [t.detach().numpy() for ts in self.tensors for t in ts]

    def step_with_grads(self, grads):
        for t, g in zip([t for ts in self.tensors for t in ts], grads):
            t.grad = self.torch.tensor(np.array(g))
        self.opt.step()

    def step_closure(self, batch):
        flat = [t for ts in self.tensors for t in ts]

        def closure():
            self.opt.zero_grad()
            loss = poly_loss(flat, [self.torch.tensor(np.array(d)) for d in batch], xp=self.torch)
            loss.backward()
            return loss

        return float(self.opt.step(closure).detach())


def assert_close(opt, twin):
    for x, y in zip(jax.tree.leaves(opt.params), twin.flat()):
        np.testing.assert_allclose(np.asarray(x), y, **F32)


def seed_example(torch, name, options, rng):
    params = model(rng)
    opt = CLASSES[name]([{"params": params["base"]}, {"params": params["classifier"], "lr": 1e-3}],
                        **options)
    twin = TorchTwin(torch, ALGORITHMS[name][1],
                     [{"params": params["base"]}, {"params": params["classifier"], "lr": 1e-3}], options)
    return opt, twin


OPTIONS = {
    "sgd": {"lr": 1e-2, "momentum": 0.9},
    "adam": {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1},
    "adamw": {"lr": 1e-2, "betas": (0.8, 0.99)},
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_step_with_gradients_matches_torch_with_changes_halfway(torch_module, name):
    rng = np.random.default_rng(0)
    opt, twin = seed_example(torch_module, name, OPTIONS[name], rng)
    for step in range(30):
        if step == 15:  # torch's idiom: mutate a group's hyperparameters between steps
            for g in (opt.param_groups[1], twin.opt.param_groups[1]):
                g["lr"] = 0.05
                g["momentum" if name == "sgd" else "betas"] = 0.5 if name == "sgd" else (0.5, 0.9)
        grads = [rng.standard_normal(np.shape(x)).astype(np.float32) for x in twin.flat()]
        opt.grad = [jax.tree.unflatten(jax.tree.structure(g["params"]), grads[:2] if i == 0 else grads[2:])
                    for i, g in enumerate(opt.param_groups)]
        opt.step()
        twin.step_with_grads(grads)
        assert_close(opt, twin)


@pytest.mark.parametrize("name", list(CLASSES))
def test_step_closure_matches_torch_and_adds_a_group_halfway(torch_module, name):
    rng = np.random.default_rng(1)
    opt, twin = seed_example(torch_module, name, OPTIONS[name], rng)
    extra = rng.standard_normal(5).astype(np.float32)
    for step in range(30):
        if step == 10:
            opt.add_param_group({"params": {"head": extra}, "lr": 0.02})
            twin.tensors.append([torch_module.tensor(extra.copy(), requires_grad=True)])
            twin.opt.add_param_group({"params": twin.tensors[-1], "lr": 0.02})
        batch = [rng.standard_normal(np.shape(x)).astype(np.float32) for x in twin.flat()]
        if step == 20:
            opt.param_groups[0]["lr"] = twin.opt.param_groups[0]["lr"] = 0.03

        def closure(p):
            return poly_loss(p, batch)

        loss = opt.step(closure)
        expected = twin.step_closure(batch)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert_close(opt, twin)
        assert opt.grad is None


class TraceCounter:
    """Counts how often a closure body runs, i.e. how often the step is traced. (A captured list
    would itself be part of the compile key, its contents changing with every append.)"""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


def counted_closure_factory():
    traces = TraceCounter()

    def make(batch):
        def closure(p):
            traces()  # runs only while tracing
            return poly_loss(p, batch)
        return closure

    return traces, make


def test_fresh_closure_every_iteration_compiles_once():
    rng = np.random.default_rng(2)
    opt = optim.Adam(model(rng), lr=1e-3)
    traces, make = counted_closure_factory()
    batches = [jax.tree.map(jnp.asarray, model(rng)) for _ in range(4)]
    for i in range(100):
        opt.step(make(batches[i % 4]))
    assert traces.n == 1


def test_hyperparameter_changes_do_not_recompile_but_a_new_shape_does():
    rng = np.random.default_rng(3)
    opt = optim.AdamW(model(rng), lr=1e-3, weight_decay=0.01)
    traces, make = counted_closure_factory()
    batch = jax.tree.map(jnp.asarray, model(rng))
    opt.step(make(batch))
    for lr, wd, betas in [(1e-2, 0.5, (0.8, 0.9)), (3e-4, 0.2, (0.5, 0.999)), (0.0, 1.0, (0.0, 0.0))]:
        g = opt.param_groups[0]
        g["lr"], g["weight_decay"], g["betas"], g["eps"] = lr, wd, betas, 1e-6
        opt.step(make(batch))
    assert traces.n == 1
    # weight_decay 0 leaves the params out of the gradient: crossing zero compiles once, and
    # both programs stay cached.
    for wd in (0.0, 0.3, 0.0, 0.1):
        opt.param_groups[0]["weight_decay"] = wd
        opt.step(make(batch))
    assert traces.n == 2

    def shaped_loss(p, x):  # a new batch shape: exactly one more compile
        traces()
        return jnp.sum(p["base"]["w"] * x[:4, :3].sum())

    for n in (4, 4, 8, 8, 8):
        opt.step(shaped_loss, jnp.ones((n, 3)))
    assert traces.n == 4


def test_closure_over_module_globals_reads_the_new_batch():
    namespace = {}
    exec(
        "import jax.numpy as jnp\n"
        "def run(opt, batches):\n"
        "    global x\n"
        "    losses = []\n"
        "    for x in batches:\n"
        "        losses.append(float(opt.step(lambda p: jnp.sum((p - x) ** 2))))\n"
        "    return losses\n",
        namespace,
    )
    opt = optim.SGD(jnp.zeros(3), lr=0.0)
    losses = namespace["run"](opt, [jnp.full(3, float(k)) for k in range(4)])
    assert losses == [0.0, 3.0, 12.0, 27.0]
    assert len(opt._compiled) == 1


def test_backward_accumulates_and_zero_grad_resets():
    rng = np.random.default_rng(4)
    params = model(rng)
    b1, b2 = (jax.tree.map(jnp.asarray, model(rng)) for _ in range(2))
    accumulated = optim.SGD(jax.tree.map(np.copy, params), lr=0.1, momentum=0.9)
    accumulated.backward(poly_loss, b1)
    accumulated.backward(poly_loss, b2)
    summed = optim.SGD(jax.tree.map(np.copy, params), lr=0.1, momentum=0.9)
    summed.grad = jax.tree.map(jnp.add, jax.grad(poly_loss)(params, b1), jax.grad(poly_loss)(params, b2))
    np.testing.assert_allclose(
        jax.tree.leaves(accumulated.grad)[0], jax.tree.leaves(summed.grad)[0], rtol=1e-6)
    accumulated.step()
    summed.step()
    for x, y in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(summed.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    accumulated.zero_grad()
    assert accumulated.grad is None
    accumulated.zero_grad(set_to_none=False)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(accumulated.grad))


def test_a_param_array_from_before_a_step_is_deleted_by_it():
    opt = optim.Adam({"w": jnp.ones(3)}, lr=0.1)
    old = opt.params["w"]
    opt.step(lambda p: jnp.sum(p["w"] ** 2))
    with pytest.raises(RuntimeError, match="deleted"):
        old + 1
    assert float(opt.params["w"][0]) < 1.0


def test_state_has_torch_names_and_is_readable_by_param():
    opt = optim.Adam({"a": jnp.ones(2), "b": jnp.ones(3)}, lr=0.1, amsgrad=True)
    opt.step(lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(p["b"]))
    entry = opt.state[opt.params["b"]]
    assert set(entry) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert int(entry["step"]) == 1
    np.testing.assert_allclose(entry["exp_avg"], 0.1, rtol=1e-6)
    sgd = optim.SGD({"a": jnp.ones(2)}, lr=0.1, momentum=0.9)
    sgd.step(lambda p: jnp.sum(p["a"]))
    np.testing.assert_allclose(sgd.state[0]["momentum_buffer"], 1.0)
    assert len(optim.SGD({"a": jnp.ones(2)}, lr=0.1).state) == 0  # no momentum, no state


def test_momentum_switched_on_later_starts_its_buffer_like_torch(torch_module):
    rng = np.random.default_rng(5)
    params = rng.standard_normal(4).astype(np.float32)
    opt = optim.SGD(params.copy(), lr=0.1, dampening=0.5)
    twin = TorchTwin(torch_module, "SGD", [{"params": params.copy()}], {"lr": 0.1, "dampening": 0.5})
    for step in range(6):
        if step == 3:
            opt.param_groups[0]["momentum"] = twin.opt.param_groups[0]["momentum"] = 0.9
        grad = rng.standard_normal(4).astype(np.float32)
        opt.grad = grad
        opt.step()
        twin.step_with_grads([grad])
        assert_close(opt, twin)


def test_labelled_groups_equal_list_groups():
    rng = np.random.default_rng(6)
    params = model(rng)
    labels = {"base": "base", "classifier": "head"}  # a prefix labels whole subtrees
    tree_opt = optim.SGD(optim.labelled(params, labels, {"base": {}, "head": {"lr": 1e-3}}),
                         lr=1e-2, momentum=0.9)
    list_opt = optim.SGD([{"params": params["base"]}, {"params": params["classifier"], "lr": 1e-3}],
                         lr=1e-2, momentum=0.9)
    batch = jax.tree.map(jnp.asarray, model(rng))
    for _ in range(5):
        tree_opt.step(lambda p: poly_loss(p, batch))
        list_opt.step(lambda p: poly_loss({"base": p[0], "classifier": p[1]}, batch))
    assert jax.tree.structure(tree_opt.params) == jax.tree.structure(params)
    np.testing.assert_allclose(tree_opt.params["classifier"]["w"], list_opt.params[1]["w"], rtol=1e-6)
    np.testing.assert_allclose(tree_opt.params["base"]["b"], list_opt.params[0]["b"], rtol=1e-6)
    assert tree_opt.param_groups[1]["lr"] == 1e-3


def test_hooks_run_around_each_step_and_can_be_removed():
    calls = []
    opt = optim.SGD(jnp.ones(2), lr=0.1)
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.step(lambda p: jnp.sum(p))
    pre.remove()
    opt.step(lambda p: jnp.sum(p))
    assert calls == ["pre", "post", "post"]


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dict_round_trip_through_msgpack_continues_bit_identically(name):
    rng = np.random.default_rng(7)
    params = model(rng)
    batches = [jax.tree.map(jnp.asarray, model(rng)) for _ in range(6)]
    make = lambda: CLASSES[name](  # noqa: E731
        [{"params": jax.tree.map(np.copy, params["base"])},
         {"params": jax.tree.map(np.copy, params["classifier"]), "lr": 1e-3}], **OPTIONS[name])
    original = make()
    for b in batches[:3]:
        original.step(poly_loss, b)
    saved = flax.serialization.to_bytes(original.state_dict())
    restored = make()
    for b in batches[:3]:  # same params, so only the optimizer state is being restored
        restored.step(poly_loss, b)
    restored.load_state_dict(flax.serialization.msgpack_restore(saved))
    for b in batches[3:]:
        original.step(poly_loss, b)
        restored.step(poly_loss, b)
    for x, y in zip(jax.tree.leaves(original.params), jax.tree.leaves(restored.params)):
        np.testing.assert_array_equal(x, y)
    assert jax.tree.map(np.asarray, original.state_dict()["param_groups"]) == \
        jax.tree.map(np.asarray, restored.state_dict()["param_groups"])


def test_load_state_dict_restores_hyperparameters_and_state():
    opt = optim.Adam({"w": jnp.ones(3)}, lr=0.1)
    opt.step(lambda p: jnp.sum(p["w"] ** 2))
    saved = opt.state_dict()
    fresh = optim.Adam({"w": jnp.ones(3)}, lr=0.5)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(fresh.state[0]["exp_avg"], opt.state[0]["exp_avg"])
    assert int(fresh.state[0]["step"]) == 1


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("build, message", [
    (lambda p: optim.SGD(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: optim.SGD(p, momentum=-1), "Invalid momentum value: -1"),
    (lambda p: optim.SGD(p, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.Adam(p, betas=(1.5, 0.9)), "Invalid beta parameter at index 0: 1.5"),
    (lambda p: optim.Adam(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda p: optim.AdamW(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: optim.SGD([{"params": p, "lr": -2.0}], lr=0.1), "Invalid learning rate: -2.0"),
    (lambda p: optim.SGD([{"params": p}, {"params": p}], lr=0.1),
     "some parameters appear in more than one parameter group"),
    (lambda p: optim.SGD([{"params": p}, {"lr": 0.1}], lr=0.1), "param group must have a 'params' key"),
    (lambda p: optim.SGD({}, lr=0.1), "optimizer got an empty parameter list"),
])
def test_construction_errors(build, message):
    with pytest.raises(ValueError) as error:
        build({"w": jnp.ones(2)})
    assert str(error.value).startswith(message)


def snapshot(opt):
    return (jax.tree.map(np.array, opt.params), jax.tree.map(np.array, opt._states()),
            [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups])


def assert_unchanged(opt, before):
    after = snapshot(opt)
    for x, y in zip(jax.tree.leaves(before[:2]), jax.tree.leaves(after[:2])):
        np.testing.assert_array_equal(x, y)
    assert before[2] == after[2]


@pytest.fixture
def trained():
    opt = optim.Adam({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, lr=0.1)
    opt.step(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"]))
    return opt


def test_step_without_gradient_raises(trained):
    before = snapshot(trained)
    with pytest.raises(RuntimeError, match="step\\(\\) needs a gradient"):
        trained.step()
    assert_unchanged(trained, before)


@pytest.mark.parametrize("grad, message", [
    ({"w": jnp.ones((2, 3))}, "grad has structure"),
    ({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}, "gradient of group 0 at \\['w'\\] has shape \\(3, 2\\)"),
])
def test_gradient_of_wrong_structure_or_shape_raises(trained, grad, message):
    before = snapshot(trained)
    with pytest.raises(ValueError, match=message):
        trained.grad = grad
        trained.step()
    assert_unchanged(trained, before)


def test_closure_returning_a_non_scalar_raises(trained):
    before = snapshot(trained)
    with pytest.raises(ValueError, match="the closure must return a scalar loss, got an array of shape \\(3,\\)"):
        trained.step(lambda p: p["b"] * 2)
    assert_unchanged(trained, before)


@pytest.mark.parametrize("corrupt, message", [
    (lambda sd: {"state": sd["state"]}, "must be a dict with 'state' and 'param_groups'"),
    (lambda sd: {**sd, "param_groups": sd["param_groups"] * 2}, "has 2 parameter groups, the optimizer has 1"),
    (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0], "params": [0]}]},
     "group 0 has 1 parameters, the optimizer's group 0 has 2"),
    (lambda sd: {**sd, "state": {0: sd["state"][0],
                                 1: {k: v for k, v in sd["state"][1].items() if k != "step"}}},
     "loaded state for parameter 1 has no 'step'"),
    (lambda sd: {**sd, "state": {**sd["state"], 1: {**sd["state"][1], "exp_avg": jnp.ones(7)}}},
     "loaded 'exp_avg' for parameter 1 has shape \\(7,\\), expected \\(2, 3\\)"),
    (lambda sd: {**sd, "state": {**sd["state"], 1: {**sd["state"][1], "exp_avg": jnp.ones((2, 3), jnp.int32)}}},
     "loaded 'exp_avg' for parameter 1 has dtype int32, expected float32"),
    (lambda sd: {**sd, "state": {**sd["state"], 0: {**sd["state"][0], "bogus": 1}}},
     "parameter 0 has unexpected entries \\['bogus'\\]"),
])
def test_mismatched_state_dict_raises_and_changes_nothing(trained, corrupt, message):
    before = snapshot(trained)
    with pytest.raises(ValueError, match=message):
        trained.load_state_dict(corrupt(trained.state_dict()))
    assert_unchanged(trained, before)


def test_compiled_step_does_not_keep_the_first_batch_alive():
    import gc
    import weakref

    opt = optim.SGD(jnp.zeros(3), lr=0.1)
    first = jnp.ones(3)
    ref = weakref.ref(first)
    def step_on(batch):
        opt.step(lambda p: jnp.sum(p * batch))

    step_on(first)
    step_on(jnp.full(3, 2.0))
    del first
    gc.collect()
    assert ref() is None


def test_only_globals_the_closure_loads_become_arguments():
    from optim_jax.stateful import functionalize

    namespace = {"T": jnp.ones(2), "w": jnp.ones((2, 2))}
    exec("def closure(p):\n    return (p.T @ w).sum()\n", namespace)
    _, arrays, _, _ = functionalize.split_call(namespace["closure"], (), {})
    assert len(arrays) == 1 and arrays[0] is namespace["w"]


def test_redefining_a_global_function_compiles_again():
    namespace = {}
    exec("import jax.numpy as jnp\n"
         "def loss_fn(p):\n    return jnp.sum(p)\n"
         "def closure(p):\n    return loss_fn(p)\n", namespace)
    opt = optim.SGD(jnp.zeros(2), lr=0.1)
    opt.step(namespace["closure"])
    exec("def loss_fn(p):\n    return -2.0 * jnp.sum(p)\n", namespace)
    opt.step(namespace["closure"])
    np.testing.assert_allclose(opt.params, [0.1, 0.1])  # -0.1 then +0.2


def test_a_changed_python_value_in_the_closure_compiles_again_and_is_used():
    opt = optim.SGD(jnp.zeros(2), lr=1.0)
    traces = TraceCounter()
    for scale in (1.0, 1.0, 3.0):
        def closure(p):
            traces()
            return jnp.sum(p) * scale
        opt.step(closure)
    np.testing.assert_allclose(opt.params, [-5.0, -5.0])
    assert traces.n == 2


def test_custom_optimizer_with_a_required_default():
    class Plain(optim.Optimizer):
        transform = staticmethod(optim.sgd)

        def __init__(self, params, lr=optim.required):
            super().__init__(params, {"lr": lr})

    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        Plain([{"params": jnp.ones(2)}])
    opt = Plain([{"params": jnp.ones(2), "lr": 0.5}])
    opt.step(lambda p: jnp.sum(p[0]))
    np.testing.assert_allclose(opt.params[0], [0.5, 0.5])


def test_load_state_dict_takes_hyperparameters_as_saved_like_torch():
    """torch's LinearLR(end_factor=0) can end at lr = -5e-19; such a checkpoint must load."""
    opt = optim.SGD(jnp.ones(2), lr=0.1, momentum=0.9)
    opt.step(lambda p: jnp.sum(p))
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = -5.075e-19
    fresh = optim.SGD(jnp.ones(2), lr=0.1, momentum=0.9)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == -5.075e-19
    fresh.step(lambda p: jnp.sum(p))


@pytest.mark.parametrize("name", ["SGD", "Adam", "LBFGS"])
def test_steps_after_the_first_and_after_a_state_dict_reload_compile_nothing(
    name, xla_compilations
):
    # Fresh params and a fresh state are uncommitted arrays, every step returns committed ones:
    # jit compiles once for each kind unless the optimizer commits them up front.
    x = jnp.ones((5, 4))
    opt = getattr(optim, name)({"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, lr=0.01)

    def step():
        opt.step(lambda p: jnp.sum((x @ p["w"] + p["b"]) ** 2))

    before = xla_compilations()
    step()
    assert xla_compilations() - before >= 1
    before = xla_compilations()
    step()
    step()
    assert xla_compilations() == before
    opt.load_state_dict(jax.device_get(opt.state_dict()))
    before = xla_compilations()
    step()
    assert xla_compilations() == before
