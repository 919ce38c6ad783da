"""Nothing a user does loses data, steps silently wrong, or leaves a stateful optimizer unusable.

Each test is one class of mistake or fault (issue 12); the property tests at the end throw random
hyperparameter edits and state_dict corruptions at the classes and require, every time, either a
clear error and an optimizer bit-identical to before that still steps like an untouched copy, or
a step equal to torch's.
"""

import copy
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optim_jax as optim


def make_params():
    return {"w": jnp.arange(1.0, 4.0), "b": jnp.ones(2)}


def sq(p):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))


def snapshot(opt):
    """Everything observable of an optimizer, as NumPy and Python values."""
    sd = opt.state_dict()
    return (
        jax.tree.map(np.asarray, opt.params),
        {i: {k: np.asarray(v) for k, v in e.items()} for i, e in sd["state"].items()},
        [sorted((k, repr(v)) for k, v in g.items()) for g in sd["param_groups"]],
    )


def assert_same(a, b):
    np.testing.assert_equal(a[0], b[0])
    np.testing.assert_equal(a[1], b[1])
    assert a[2] == b[2]


def assert_steps_alike(opt, untouched, steps=2):
    for _ in range(steps):
        opt.step(sq)
        untouched.step(sq)
    assert_same(snapshot(opt), snapshot(untouched))


# -- data loss ---------------------------------------------------------------------------------


def test_held_state_dicts_survive_any_number_of_steps_and_loads():
    opt = optim.Adam(make_params(), lr=0.1)
    opt.step(sq)
    best = opt.state_dict()
    kept = jax.tree.map(np.asarray, best["state"])
    for _ in range(3):
        opt.step(sq)
        opt.load_state_dict(best)
        opt.step(sq)
    np.testing.assert_equal(jax.tree.map(np.asarray, best["state"]), kept)
    opt.load_state_dict(best)
    np.testing.assert_equal(jax.tree.map(np.asarray, opt.state_dict()["state"]), kept)


def test_constructor_copies_the_callers_arrays():
    params = make_params()
    opt = optim.SGD(params, lr=0.1)
    opt.step(sq)
    np.testing.assert_equal(np.asarray(params["w"]), [1.0, 2.0, 3.0])  # not donated
    assert not np.array_equal(opt.params["w"], params["w"])


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("cls, options", [(optim.Adam, {"lr": 0.1, "amsgrad": True}),
                                          (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                          (optim.LBFGS, {"lr": 0.5})])
def test_copies_after_steps_continue_exactly_like_the_original(copier, cls, options):
    opt = cls(make_params(), **options)
    opt.step(sq)
    opt.param_groups[0]["lr"] = 0.05
    twin = copier(opt)
    assert_same(snapshot(twin), snapshot(opt))
    assert twin.param_groups[0]["lr"] == 0.05
    assert_steps_alike(twin, opt)
    before = snapshot(opt)
    twin.step(sq)
    twin.param_groups[0]["lr"] = 0.5
    assert_same(snapshot(opt), before)  # independent: the original did not change


def test_pickled_optimizer_with_named_groups_and_grad_round_trips():
    opt = optim.AdamW([{"params": [("w", jnp.ones(3))]}, {"params": [("b", jnp.zeros(2))], "lr": 0.5}])
    opt.grad = [[("w", jnp.ones(3))], [("b", jnp.ones(2))]]
    back = pickle.loads(pickle.dumps(opt))
    assert back.param_groups[1]["param_names"] == ["b"]
    opt.step()
    back.step()
    assert_same(snapshot(back), snapshot(opt))


# -- silently wrong steps ----------------------------------------------------------------------


@pytest.mark.parametrize("options, error", [
    ({"lr": None}, TypeError), ({"lr": "0.1"}, TypeError), ({"lr": [0.1]}, TypeError),
    ({"betas": ("a", "b")}, TypeError), ({"betas": (0.9,)}, TypeError),
    ({"eps": None}, TypeError), ({"lr": jnp.ones(2)}, ValueError),
])
def test_wrong_kinds_of_hyperparameters_fail_at_construction(torch_module, options, error):
    with pytest.raises(error, match="lr|beta|eps"):
        optim.Adam(make_params(), **options)
    torch_options = {k: torch_module.ones(2) if isinstance(v, jax.Array) else v
                     for k, v in options.items()}
    with pytest.raises((TypeError, ValueError, IndexError)):
        torch_module.optim.Adam([torch_module.ones(2, requires_grad=True)], **torch_options)


@pytest.mark.parametrize("edit, error", [
    (lambda g: g.__setitem__("lr", None), TypeError),
    (lambda g: g.__setitem__("lr", "0.1"), TypeError),
    (lambda g: g.__setitem__("lr", jnp.ones(2)), ValueError),
    (lambda g: g.__setitem__("betas", (0.9, None)), TypeError),
    (lambda g: g.__delitem__("lr"), KeyError),
], ids=["None", "str", "array", "beta-None", "deleted"])
def test_bad_group_edits_fail_at_step_and_change_nothing(edit, error):
    opt = optim.Adam(make_params(), lr=0.1)
    opt.step(sq)
    untouched = copy.deepcopy(opt)
    before = snapshot(opt)
    edit(opt.param_groups[0])
    with pytest.raises(error, match=r"param_groups\[0\]"):
        opt.step(sq)
    opt.param_groups[0].update(lr=0.1, betas=(0.9, 0.999))
    assert_same(snapshot(opt), before)
    assert_steps_alike(opt, untouched)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8])
def test_non_floating_params_are_refused(dtype):
    with pytest.raises(TypeError, match=r"floating point.*\['w'\].*" + jnp.dtype(dtype).name):
        optim.SGD({"w": jnp.ones(3, dtype), "b": jnp.ones(2)}, lr=0.1)


def test_state_keeps_the_params_dtype_under_wider_gradients(x64):
    params = {"w": jnp.ones(3, jnp.float32)}
    opt = optim.Adam(params, lr=0.1)
    opt.grad = {"w": jnp.ones(3, jnp.float64)}
    opt.step()
    assert opt.params["w"].dtype == jnp.float32
    assert opt.state[0]["exp_avg"].dtype == jnp.float32
    twin = optim.Adam(params, lr=0.1)
    twin.load_state_dict(opt.state_dict())  # loads into an identical optimizer
    with pytest.raises(TypeError, match=r"complex"):
        opt.grad = {"w": jnp.ones(3, jnp.complex64)}
        opt.step()


def test_explicit_numbers_are_traced_not_compiled(xla_compilations):
    opt = optim.SGD(make_params(), lr=0.01)

    def loss(p, scale, offset):
        return scale * sq(p) + offset

    opt.step(loss, 1.0, 0)  # a float and an int, as below: jax.jit's weak types
    before = xla_compilations()
    losses = [float(opt.step(loss, float(s), 2 * s)) for s in range(2, 12)]
    assert xla_compilations() == before
    assert len(opt._compiled) == 1
    np.testing.assert_allclose(losses[0], 2 * float(sq(make_params())) * 0.98**2 + 4, rtol=1e-5)


def test_churning_captures_warn_once_naming_what_changes_and_the_cache_is_bounded():
    opt = optim.SGD(make_params(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            scale = float(i)
            opt.step(lambda p: scale * sq(p))
    messages = [str(w.message) for w in caught if "compiled for" in str(w.message)]
    assert len(messages) == 1
    assert "captured 'scale': 7.0 -> 8.0" in messages[0]
    assert len(opt._compiled) <= opt._compiled.capacity


# -- crashes that left the optimizer unusable --------------------------------------------------


def test_one_array_at_two_paths_is_one_tied_parameter(torch_module):
    a = jnp.asarray([1.0, -2.0])
    opt = optim.Adam({"x": a, "y": a, "z": jnp.ones(2)}, lr=0.1)
    shared = torch_module.tensor([1.0, -2.0], requires_grad=True)
    other = torch_module.ones(2, requires_grad=True)
    reference = torch_module.optim.Adam([shared, other], lr=0.1)

    def loss(p):
        return jnp.sum(p["x"] ** 2) + jnp.sum(3 * p["y"]) + jnp.sum(p["z"] ** 2)

    for _ in range(3):
        opt.step(loss)
        reference.zero_grad()
        (torch_module.sum(shared**2) + torch_module.sum(3 * shared) + torch_module.sum(other**2)).backward()
        reference.step()
    np.testing.assert_allclose(opt.params["x"], shared.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(opt.params["x"], opt.params["y"])
    assert len(opt.state_dict()["state"]) == 2  # one entry per parameter, as torch
    opt.grad = {"x": jnp.ones(2), "y": jnp.ones(2), "z": jnp.ones(2)}  # summed into x
    opt.step()


def test_duplicate_in_a_list_warns_like_torch_and_steps_once():
    a = jnp.ones(2)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optim.SGD([a, a], lr=0.1)
    opt.step(lambda p: jnp.sum(p[0]) + jnp.sum(p[1]))
    np.testing.assert_allclose(opt.params[0], [0.8, 0.8])
    np.testing.assert_array_equal(opt.params[1], opt.params[0])


def test_none_gradient_skips_its_parameter_like_torch(torch_module, x64):
    params = {"b": np.array([1.0, 2.0]), "w": np.array([3.0, 4.0, 5.0])}
    opt = optim.Adam(jax.tree.map(jnp.asarray, params), lr=0.1)
    tensors = [torch_module.tensor(params["b"], requires_grad=True),
               torch_module.tensor(params["w"], requires_grad=True)]
    reference = torch_module.optim.Adam(tensors, lr=0.1)
    opt.grad = {"b": None, "w": jnp.ones(3)}
    opt.step()
    tensors[1].grad = torch_module.ones(3, dtype=torch_module.float64)
    reference.step()
    np.testing.assert_array_equal(opt.params["b"], params["b"])
    np.testing.assert_allclose(opt.params["w"], tensors[1].detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], [0.0, 0.0])
    assert opt.grad["b"] is None


def test_group_appended_by_hand_is_adopted_like_torch(torch_module, x64):
    opt = optim.SGD([{"params": [jnp.ones(2)]}], lr=0.1)
    opt.param_groups.append({"params": [jnp.full(2, 3.0)], "lr": 0.5})
    t1, t2 = torch_module.ones(2, requires_grad=True), torch_module.full((2,), 3.0, requires_grad=True)
    reference = torch_module.optim.SGD([{"params": [t1]}], lr=0.1)
    reference.param_groups.append({**reference.defaults, "params": [t2], "lr": 0.5})
    opt.step(lambda groups: sum(jnp.sum(p**2) for g in groups for p in g))
    (torch_module.sum(t1**2) + torch_module.sum(t2**2)).backward()
    reference.step()
    np.testing.assert_allclose(opt.params[1][0], t2.detach().numpy())
    opt.param_groups.append({"params": [jnp.ones(2, jnp.int32)]})
    with pytest.raises(TypeError, match="floating point"):
        opt.step(lambda groups: 0.0)


# -- property tests ----------------------------------------------------------------------------

ALGORITHMS = [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.1}),
              ("AdamW", {"lr": 0.1, "amsgrad": True}), ("RMSprop", {"lr": 0.01}),
              ("Adagrad", {"lr": 0.1})]
OPTIONS = ["lr", "weight_decay", "eps", "momentum", "betas", "alpha", "lr_decay"]

values = st.one_of(
    st.floats(-0.5, 0.9), st.none(), st.text(max_size=3), st.lists(st.floats(0, 1), max_size=2),
    st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)), st.just(np.ones(2)), st.just(np.float64(0.2)),
)


def torch_twin(torch, name, options, params):
    tensors = [torch.tensor(np.asarray(p), requires_grad=True) for p in jax.tree.leaves(params)]
    return getattr(torch.optim, name)(tensors, **options, foreach=False), tensors


def step_with_zero_buffers(torch, reference, tensors):
    """torch's RMSprop makes its momentum buffers only in a group that has momentum from its
    first step, and fails (KeyError) when momentum is switched on later; optim_jax starts the
    buffers at zero then, as torch starts them: torch's step with zero buffers put in."""
    for t in tensors:
        reference.state[t]["momentum_buffer"] = torch.zeros_like(t)
    reference.step()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algorithm=st.sampled_from(ALGORITHMS), option=st.sampled_from(OPTIONS), value=values,
       delete=st.booleans())
def test_random_group_edits_fail_cleanly_or_step_like_torch(torch_module, x64, algorithm, option, value, delete):
    name, options = algorithm
    opt = getattr(optim, name)(make_params(), **options)
    reference, tensors = torch_twin(torch_module, name, options, opt.params)
    if option not in opt.param_groups[0]:
        return
    untouched, before = copy.deepcopy(opt), snapshot(opt)
    for group in (opt.param_groups[0], reference.param_groups[0]):
        if delete:
            del group[option]
        else:
            group[option] = value
    try:
        for t in tensors:
            t.grad = 2 * t.detach()
        reference.step()
        torch_error = None
    except Exception as error:  # noqa: BLE001 - any torch failure: ours must fail too
        torch_error = error
    if isinstance(torch_error, KeyError) and torch_error.args == ("momentum_buffer",):
        torch_error = step_with_zero_buffers(torch_module, reference, tensors)
    try:
        opt.step(sq)
    except (TypeError, ValueError, KeyError) as error:
        assert str(error)
        now = snapshot(opt)  # params and state as before (the groups hold the user's edit)
        np.testing.assert_equal(now[:2], before[:2])
        opt.param_groups[0] = dict(untouched.param_groups[0], params=opt.param_groups[0]["params"])
        assert_steps_alike(opt, untouched)
        return
    assert torch_error is None, f"torch refused {option}={value!r} ({torch_error}), optim_jax stepped"
    for ours, theirs in zip(jax.tree.leaves(opt.params), tensors):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


CORRUPTIONS = {
    "field dropped": lambda sd, rng: sd["state"][rng.integers(2)].pop("exp_avg"),
    "wrong shape": lambda sd, rng: sd["state"][1].__setitem__("exp_avg", np.ones(7)),
    "wrong dtype": lambda sd, rng: sd["state"][0].__setitem__("exp_avg", np.ones(2, np.int32)),
    "extra entry": lambda sd, rng: sd["state"][0].__setitem__("bogus", np.ones(2)),
    "steps differ": lambda sd, rng: sd["state"][0].__setitem__("step", np.asarray(99)),
    "group added": lambda sd, rng: sd["param_groups"].append(dict(sd["param_groups"][0])),
    "index dropped": lambda sd, rng: sd["param_groups"][0]["params"].pop(),
    "lr a string": lambda sd, rng: sd["param_groups"][0].__setitem__("lr", "fast"),
    "betas short": lambda sd, rng: sd["param_groups"][0].__setitem__("betas", [0.9]),
    "no state": lambda sd, rng: sd.pop("state"),
}


@settings(max_examples=25, deadline=None)
@given(kinds=st.lists(st.sampled_from(sorted(CORRUPTIONS)), min_size=1, max_size=3, unique=True),
       seed=st.integers(0, 2**16))
def test_corrupt_state_dicts_fail_cleanly_and_change_nothing(kinds, seed):
    opt = optim.Adam(make_params(), lr=0.1)
    opt.step(sq)
    saved = opt.state_dict()
    opt.step(sq)
    untouched, before = copy.deepcopy(opt), snapshot(opt)
    corrupt = copy.deepcopy(saved)
    rng = np.random.default_rng(seed)
    for kind in sorted(kinds, key=lambda k: k == "no state"):  # dropping 'state' goes last
        CORRUPTIONS[kind](corrupt, rng)
    with pytest.raises((TypeError, ValueError)) as error:
        opt.load_state_dict(corrupt)
    assert str(error.value)
    assert_same(snapshot(opt), before)
    assert_steps_alike(opt, untouched)
    opt.load_state_dict(saved)  # the real one still loads


def test_a_group_gaining_momentum_keeps_one_step_count_per_block(torch_module):
    """RMSprop's running mean and its momentum each count ``step``; a group whose momentum goes
    from 0 to 0.5 takes both counts from its one old ``step``, as separate arrays (a step
    donates each), and its momentum buffers start at zero."""
    values = {"b": np.ones(3) / 3, "w": np.arange(6.0).reshape(2, 3) / 7}
    with jax.enable_x64(True):
        opt = optim.RMSprop({k: jnp.asarray(v) for k, v in values.items()}, lr=0.01)
        tensors = [torch_module.tensor(v, requires_grad=True) for v in values.values()]
        reference = torch_module.optim.RMSprop(tensors, lr=0.01)
        for step in range(4):
            if step == 1:
                opt.param_groups[0]["momentum"] = reference.param_groups[0]["momentum"] = 0.5
            opt.step(lambda p: sum(jnp.sum(x ** 2) for x in p.values()))
            for t in tensors:
                t.grad = 2 * t.detach()
            if step == 1:
                step_with_zero_buffers(torch_module, reference, tensors)
            else:
                reference.step()
        for ours, theirs in zip(jax.tree.leaves(opt.params), tensors):
            np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("leaves", [3, 12])  # a tree, and contiguous buffers (MIN_LEAVES 8)
@pytest.mark.parametrize("name, option, values", [
    ("SGD", "momentum", [0.9, 0.0, 0.0, 0.9, 0.9]),
    ("RMSprop", "momentum", [0.5, 0.0, 0.5, 0.5]),
    ("Adam", "amsgrad", [True, False, False, True]),
])
def test_state_an_option_stops_using_is_kept_for_when_it_is_used_again(
        name, option, values, leaves, torch_module):
    """torch keeps a momentum buffer while momentum is 0 (and ``max_exp_avg_sq`` while
    ``amsgrad`` is off), unread and unwritten, and takes it up again after; its state_dict
    holds it meanwhile and loads. Checked step by step against torch, through a state_dict
    saved and loaded (into a fresh optimizer) while the option is off."""
    torch = torch_module
    rng = np.random.default_rng(7)
    start = [rng.standard_normal(3).astype(np.float32) for _ in range(leaves)]
    grads = [[rng.standard_normal(3).astype(np.float32) for _ in range(leaves)] for _ in values]
    reference_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in start]
    reference = getattr(torch.optim, name)(reference_params, lr=0.1, **{option: values[0]})
    opt = getattr(optim, name)([jnp.asarray(p) for p in start], lr=0.1, **{option: values[0]})
    for k, (value, grad) in enumerate(zip(values, grads)):
        reference.param_groups[0][option] = value
        opt.param_groups[0][option] = value
        for p, g in zip(reference_params, grad):
            p.grad = torch.from_numpy(g)
        reference.step()
        opt.grad = [jnp.asarray(g) for g in grad]
        opt.step()
        if k == 2:  # the option off: the unused state is in the dict, and loads
            saved = opt.state_dict()
            assert set(reference.state_dict()["state"][0]) <= set(saved["state"][0])
            params = [jnp.asarray(p) for p in opt.params]
            opt = getattr(optim, name)(params, lr=0.1, **{option: value})
            opt.load_state_dict(saved)
        for got, want in zip(opt.params, reference_params):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=2e-5, atol=1e-5)


def test_a_closure_returning_a_tuple_is_told_to_return_the_loss_alone():
    opt = optim.Adam([jnp.ones(3)], lr=0.1)
    with pytest.raises(TypeError, match="scalar loss, got a tuple: return the loss alone"):
        opt.step(lambda p: (jnp.sum(p[0] ** 2), p[0]))
