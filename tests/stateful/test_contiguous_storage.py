"""Groups of elementwise algorithms kept in contiguous buffers: steps over a few arrays, the
same values as the per-leaf pure transforms, and the user's tree wherever they look."""

import copy
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optim_jax as optim

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def mixed_tree(seed: int, leaves: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    shapes = [(3,), (2, 3), (4, 1, 2), (5,)]
    return {f"w{i}": jnp.asarray(rng.normal(size=shapes[i % 4]), DTYPES[i % 3])
            for i in range(leaves)}


def loss(params, scale):
    return sum(jnp.sum(scale * jnp.sin(p.astype(jnp.float32)) ** 2) for p in jax.tree.leaves(params))


def within_ulps(a, b) -> None:
    """Equal to a few units in the last place: a program over buffers fuses (and so rounds) the
    loss's gradient and the step slightly differently from one over leaves, and momentum
    carries the differences over steps (float32 keeps them; bfloat16 and float16 round most of
    them away)."""
    if not jnp.issubdtype(a.dtype, jnp.floating):
        np.testing.assert_array_equal(a, b)
        return
    ulps = 64 if a.dtype == jnp.float32 else 4
    eps = float(jnp.finfo(a.dtype).eps)
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=ulps * eps, atol=ulps * eps * 1e-3)


def held_arrays(opt) -> list:
    return jax.tree.leaves([r.buffers if r.packing is not None else None for r in opt._records])


CASES = {
    "adam": (optim.Adam, dict(lr=0.05, weight_decay=0.01, amsgrad=True)),
    "sgd": (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    "rmsprop": (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    "rprop": (optim.Rprop, dict(lr=0.01)),
    "nadam": (optim.NAdam, dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    "asgd": (optim.ASGD, dict(lr=0.01, t0=1)),
}


@pytest.mark.parametrize("name", CASES)
def test_steps_equal_the_tree_kept_class_over_a_buffer_per_dtype(
        name, xla_compilations):
    cls, options = CASES[name]
    tree_kept = type("TreeKept", (cls,), {"contiguous": False})
    packed, reference = cls(mixed_tree(0), **options), tree_kept(mixed_tree(0), **options)
    assert packed._records[0].packing is not None and reference._records[0].packing is None
    gradient = jax.jit(jax.grad(loss))

    def both_steps(step):
        if step % 2:
            packed.step(loss, 1.0 + step)
            reference.step(loss, 1.0 + step)
        else:
            packed.grad = reference.grad = gradient(reference.params, 1.0 + step)
            packed.step()
            reference.step()
        jax.tree.map(within_ulps, packed.params, reference.params)

    both_steps(0)
    both_steps(1)
    compiles = xla_compilations()
    for step in range(2, 6):
        both_steps(step)
    assert xla_compilations() == compiles  # nothing per step, params read between steps too
    jax.tree.map(within_ulps, packed.state_dict()["state"], reference.state_dict()["state"])
    assert len(held_arrays(packed)) == 3  # one buffer per dtype, whatever the number of leaves


def test_step_after_assigning_grad_matches_step_with_a_closure():
    a, b = optim.Adam(mixed_tree(1), lr=0.1), optim.Adam(mixed_tree(1), lr=0.1)
    for step in range(3):
        a.grad = jax.grad(loss)(a.params, 2.0)
        a.step()
        b.step(loss, 2.0)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.state_dict()["state"], b.state_dict()["state"])


def test_params_read_between_steps_are_one_tree_and_a_step_deletes_them_as_donation_would():
    opt = optim.SGD(mixed_tree(2), lr=0.1, momentum=0.9)
    opt.step(loss, 1.0)
    first = opt.params
    assert opt.params["w0"] is first["w0"]
    assert opt.param_groups[0]["params"]["w1"] is first["w1"]
    assert set(opt.state[first["w0"]]) == {"step", "momentum_buffer"}
    buffer = opt.state[0]["momentum_buffer"]
    assert opt.state[0]["momentum_buffer"] is buffer  # made once between steps
    opt.step(loss, 1.0)
    for stale in (first["w0"], buffer):
        with pytest.raises(RuntimeError, match="deleted"):
            np.asarray(stale)
    assert opt.params["w0"] is not first["w0"]


def test_params_written_into_the_group_are_where_the_next_step_starts():
    opt = optim.Adam(mixed_tree(3), lr=0.1)
    opt.step(loss, 1.0)
    twin = optim.Adam(mixed_tree(4), lr=0.1)
    twin.step(loss, 1.0)
    opt.param_groups[0]["params"] = jax.tree.map(jnp.copy, twin.params)
    opt.load_state_dict(twin.state_dict())
    opt.step(loss, 3.0)
    twin.step(loss, 3.0)
    jax.tree.map(np.testing.assert_array_equal, opt.params, twin.params)


def test_params_of_another_shape_written_into_the_group_raise_and_change_nothing():
    opt = optim.Adam(mixed_tree(5), lr=0.1)
    opt.step(loss, 1.0)
    before = jax.tree.map(np.asarray, opt.params)
    wrong = dict(opt.params, w0=jnp.zeros(7, jnp.float32))
    opt.param_groups[0]["params"] = wrong
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] was replaced"):
        opt.step(loss, 1.0)
    opt.param_groups[0]["params"] = jax.tree.map(jnp.asarray, before)
    opt.step(loss, 1.0)
    assert opt._records[0].packing is not None


def test_group_dicts_read_copy_and_pickle_with_their_params():
    opt = optim.RMSprop(mixed_tree(6), lr=0.01, momentum=0.5)
    opt.step(loss, 1.0)
    group = opt.param_groups[0]
    plain, spread = dict(group), {**group}
    assert plain["params"] is spread["params"] is group["params"]
    assert group == plain
    twin = pickle.loads(pickle.dumps(opt))
    clone = copy.deepcopy(opt)
    for other in (twin, clone):
        other.step(loss, 2.0)
    opt.step(loss, 2.0)
    for other in (twin, clone):
        jax.tree.map(np.testing.assert_array_equal, other.params, opt.params)
        assert other._records[0].packing is not None


def test_state_dict_is_per_parameter_and_loads_into_a_fresh_optimizer():
    opt = optim.Adam(mixed_tree(7), lr=0.1, amsgrad=True)
    for step in range(2):
        opt.step(loss, 1.0)
    saved = opt.state_dict()
    assert {tuple(v.shape) for v in saved["state"][1].values()} == {(), (2, 3)}
    fresh = optim.Adam(jax.tree.map(jnp.copy, opt.params), lr=0.1, amsgrad=True)
    fresh.load_state_dict(saved)
    for o in (opt, fresh):
        o.step(loss, 1.0)
    jax.tree.map(np.testing.assert_array_equal, fresh.params, opt.params)


def test_momentum_switched_on_later_migrates_the_packed_state_like_torch():
    values = [np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3) * k for k in range(1, 5)]
    values += [np.arange(4, dtype=np.float32) - k for k in range(4)]
    ours = optim.SGD([jnp.asarray(v) for v in values], lr=0.1)
    assert ours._records[0].packing is not None
    theirs_params = [torch.tensor(v, requires_grad=True) for v in values]
    theirs = torch.optim.SGD(theirs_params, lr=0.1)
    for step in range(4):
        if step == 2:
            ours.param_groups[0]["momentum"] = theirs.param_groups[0]["momentum"] = 0.9
        ours.step(lambda p: sum(jnp.sum(x**3) for x in p))
        theirs.zero_grad()
        sum((x**3).sum() for x in theirs_params).backward()
        theirs.step()
        for a, b in zip(ours.params, theirs_params):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.state[1]["momentum_buffer"],
                               theirs.state[theirs_params[1]]["momentum_buffer"].numpy(), rtol=1e-6)


def eight(shape):
    return {f"p{i}": jnp.full(shape, i + 1.0) for i in range(8)}


@pytest.mark.parametrize("build", [
    lambda: optim.Adam({**eight(2), "z": jnp.ones(3, jnp.complex64)}, lr=0.1),
    lambda: optim.Adam(jnp.ones(3), lr=0.1),
    lambda: optim.Adam({k: jnp.ones(3) for k in "abcdefg"}, lr=0.1),
    lambda: optim.Adafactor(eight((3, 4))),
    lambda: optim.LBFGS(eight(3)),
], ids=["complex", "bare array", "fewer than 8 leaves", "adafactor", "lbfgs"])
def test_groups_that_look_at_a_leaf_as_a_whole_or_are_small_keep_the_tree(build):
    opt = build()
    assert opt._records[0].packing is None
    assert optim.Adam(eight(3), lr=0.1)._records[0].packing is not None


def test_a_leaf_written_into_the_shown_params_is_where_the_next_step_starts():
    # torch users write into p.data; here that is an entry of the shown tree, in place
    opt, twin = optim.SGD(mixed_tree(8), lr=0.1), optim.SGD(mixed_tree(8), lr=0.1)
    for o in (opt, twin):
        o.step(loss, 1.0)
    new = jnp.full((3,), 0.25, jnp.float32)
    opt.param_groups[0]["params"]["w0"] = new
    twin.param_groups[0]["params"] = dict(twin.params, w0=jnp.full((3,), 0.25, jnp.float32))
    for o in (opt, twin):
        o.step(loss, 1.0)
    jax.tree.map(np.testing.assert_array_equal, opt.params, twin.params)


def test_named_and_labelled_groups_are_packed_and_step_like_the_tree():
    tree = mixed_tree(9, leaves=20)
    first = lambda k: int(k[1:]) % 2 == 0  # noqa: E731
    named = optim.Adam([(k, v) for k, v in tree.items()], lr=0.1)
    labelled = optim.Adam(optim.labelled(
        mixed_tree(9, leaves=20), lambda p: {k: "a" if first(k) else "b" for k in p},
        {"a": {}, "b": {"lr": 0.05}}), lr=0.1)
    assert named._records[0].packing is not None
    assert all(r.packing is not None for r in labelled._records)
    reference = optim.Adam(
        [{"params": {k: v for k, v in mixed_tree(9, leaves=20).items() if first(k)}},
         {"params": {k: v for k, v in mixed_tree(9, leaves=20).items() if not first(k)},
          "lr": 0.05}], lr=0.1)
    for _ in range(2):
        named.step(lambda pairs: loss(dict(pairs), 1.0))
        labelled.step(loss, 1.0)
        reference.step(lambda groups: loss(groups, 1.0))
    assert [name for name, _ in named.params] == list(tree)
    merged = {**reference.params[0], **reference.params[1]}
    jax.tree.map(within_ulps, labelled.params, merged)


def python_calls(fn) -> int:
    """How many Python functions (and builtins) ``fn()`` calls."""
    calls = [0]

    def count(frame, event, arg):
        calls[0] += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_a_steps_host_work_does_not_grow_with_the_number_of_leaves():
    """``opt.grad = tree; opt.step()`` and ``opt.step(closure)`` over a closure that captured a
    list of arrays (targets, a batch) make as many Python calls for 200 leaves as for 10: no
    Python loop over the leaves on the way to the compiled step (nnx loaded, as it may be: a
    closure's captures are then searched for Modules)."""
    import flax.nnx  # noqa: F401

    counts = []
    for leaves in (10, 200):
        targets = [jnp.full((3,), i, jnp.float32) for i in range(leaves)]
        grads = [jnp.ones(3) for _ in range(leaves)]
        opt = optim.Adam([jnp.zeros(3) for _ in range(leaves)], lr=0.1)

        def closure(params, targets=targets):
            return sum(jnp.sum((p - t) ** 2) for p, t in zip(params, targets))

        def given_step(opt=opt, grads=grads):
            opt.grad = grads
            opt.step()

        for step in (given_step, lambda: opt.step(closure)):
            step()  # compiles
            counts.append(python_calls(step))
    assert counts[:2] == counts[2:], counts
