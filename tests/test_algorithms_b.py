"""Issue 5, part B: what the generic table cannot express.

- Muon (2-d parameters only; torch's class takes no ``foreach``) and SparseAdam (torch needs
  sparse gradients) against live torch: 25 steps, float32 and float64, parameters compared after
  every step, a two-group class against torch's class, a msgpack state_dict round trip that
  continues bit-identically, torch's validation messages.
- Complex parameters for RMSprop and Rprop (torch views them as real pairs), Adafactor's and
  Muon's complex errors, Adafactor's group-wide epsilon1 taken from the first parameter.
- Differentiation through the updates of all five algorithms (finite differences).
"""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from optim_jax import Adafactor, Muon, RMSprop, SparseAdam
from optim_jax.adafactor import adafactor
from optim_jax.muon import muon, zeropower_via_newtonschulz
from optim_jax.rmsprop import rmsprop
from optim_jax.rprop import rprop
from optim_jax.sparse_adam import sparse_adam

STEPS = 25
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def run_jax(tx, params, grads_per_step):
    """Params after each jitted step."""
    state = tx.init(jax.tree.map(jnp.asarray, params))

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params, trajectory = jax.tree.map(jnp.asarray, params), []
    for grads in grads_per_step:
        params, state = step(params, state, grads)
        trajectory.append(params)
    return trajectory


def run_torch(torch, make_optimizer, params, grads_per_step, to_grad=None, lrs=None):
    """torch's params after each step; ``to_grad`` turns a numpy gradient into ``.grad``."""
    to_grad = to_grad or (lambda g: torch.tensor(np.array(g)))
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
    optimizer = make_optimizer(tensors)
    trajectory = []
    for step, grads in enumerate(grads_per_step):
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        for t, g in zip(tensors, jax.tree.leaves(grads)):
            t.grad = to_grad(g)
        optimizer.step()
        trajectory.append(treedef.unflatten([t.detach().numpy().copy() for t in tensors]))
    return trajectory


def worst_error(ours, reference):
    """The largest |a - b| / |b| over all steps and leaves."""
    return max(
        float(np.max(np.abs(np.asarray(a) - b) / np.maximum(np.abs(b), 1e-30), initial=0))
        for x, y in zip(ours, reference)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


def assert_same_trajectory(ours, reference, dtype, tolerance=None):
    tolerance = tolerance or TOLERANCE[dtype]
    for step, (a, b) in enumerate(zip(ours, reference)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype, (step, x.dtype, y.dtype)
            try:
                np.testing.assert_allclose(np.asarray(x), y, **tolerance)
            except AssertionError as error:
                raise AssertionError(
                    f"after step {step + 1} (worst relative error over the run: "
                    f"{worst_error(ours, reference):.3g}): {error}"
                ) from None


def like(rng, tree):
    return jax.tree.map(lambda x: rng.standard_normal(np.shape(x)).astype(np.asarray(x).dtype), tree)


# --------------------------------------------------------------------------------------------
# Muon

MUON_OPTIONS = [
    # torch's optim_inputs_func_muon (tensor lr: test_muon_tensor_lr)
    {},
    {"lr": 0.01},
    {"weight_decay": 0.2},
    {"momentum": 0.8},
    {"ns_steps": 6},
    {"ns_coefficients": (3.4, -4.7, 2.0)},
    # harder
    {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
    {"lr": 0.05, "momentum": 0.3, "weight_decay": 0.0, "adjust_lr_fn": "original", "eps": 1e-3},
    {"lr": 0.01, "momentum": 0.0, "ns_steps": 1, "ns_coefficients": (2.0, -1.5, 0.5)},
]


def muon_tree(rng, dtype):
    """Tall, wide and square matrices (the tall ones are orthogonalised transposed)."""
    m = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return {"tall": m(6, 3), "layers": [m(3, 5), (m(4, 4),)], "thin": m(2, 7)}


def torch_muon(torch, options):
    return lambda tensors: torch.optim.Muon(tensors, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", MUON_OPTIONS, ids=str)
def test_muon_trajectory_matches_torch(torch_module, dtype, options):
    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(0)
        params = muon_tree(rng, dtype)
        grads = [like(rng, params) for _ in range(STEPS)]
        reference = run_torch(torch_module, torch_muon(torch_module, options), params, grads)
        assert_same_trajectory(run_jax(muon(**options), params, grads), reference, dtype)


def test_muon_tensor_lr_matches_torch(torch_module):
    """float32, as torch's tensor lr also makes its per-step scalar arithmetic float32."""
    torch = torch_module
    rng = np.random.default_rng(1)
    params = muon_tree(rng, np.float32)
    grads = [like(rng, params) for _ in range(STEPS)]
    reference = run_torch(torch, torch_muon(torch, {"lr": torch.tensor(0.001)}), params, grads)
    assert_same_trajectory(run_jax(muon(lr=jnp.asarray(0.001)), params, grads), reference, np.float32)


def test_muon_schedule_matches_torch_with_lr_set_each_step(torch_module, x64):
    rng = np.random.default_rng(1)
    params = muon_tree(rng, np.float64)
    grads = [like(rng, params) for _ in range(STEPS)]
    schedule = lambda step: 0.02 * 0.9 ** step  # noqa: E731
    reference = run_torch(torch_module, torch_muon(torch_module, {}), params, grads,
                          lrs=[schedule(k) for k in range(STEPS)])
    assert_same_trajectory(run_jax(muon(lr=schedule), params, grads), reference, np.float64)


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (9, 2), (16, 16), (24, 8)])
def test_newton_schulz_is_bit_identical_to_torch(torch_module, shape):
    """bfloat16 in, bfloat16 out, with torch's roundings (float32 and float64 inputs)."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    rng = np.random.default_rng(2)
    coefficients = (3.4445, -4.7750, 2.0315)
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            g = (rng.standard_normal(shape) * 3).astype(dtype)
            theirs = _zeropower_via_newtonschulz(torch_module.tensor(g), coefficients, 5, 1e-7)
            ours = jax.jit(zeropower_via_newtonschulz, static_argnums=(1, 2, 3))(
                jnp.asarray(g), coefficients, 5, 1e-7
            )
            assert ours.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(ours, np.float32), theirs.float().numpy())


def split_muon(tree):
    return {"tall": tree["tall"], "thin": tree["thin"]}, tree["layers"]


def class_matches_torch(torch, ours_class, torch_class, defaults, overrides, split, params,
                        grads, to_grad):
    """Our class and torch's, two groups (the second with ``overrides``), compared every step.

    Returns both optimizers and torch's tensors for further checks."""
    first, second = split(params)
    opt = ours_class([{"params": first}, {"params": second, **overrides}], **defaults)
    tensors = [torch.tensor(np.array(x), requires_grad=True)
               for t in (first, second) for x in jax.tree.leaves(t)]
    n = len(jax.tree.leaves(first))
    theirs = torch_class([{"params": tensors[:n]}, {"params": tensors[n:], **overrides}], **defaults)
    for step, g in enumerate(grads):
        opt.grad = list(split(g))
        opt.step()
        for t, leaf in zip(tensors, jax.tree.leaves(list(split(g)))):
            t.grad = to_grad(leaf)
        theirs.step()
        for a, b in zip(jax.tree.leaves(opt.params), tensors):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"step {step}")
    return opt, theirs, tensors


def test_muon_class_with_two_groups_matches_torch(torch_module):
    torch = torch_module
    rng = np.random.default_rng(3)
    params = muon_tree(rng, np.float32)
    opt, theirs, tensors = class_matches_torch(
        torch, Muon, torch.optim.Muon, {"lr": 0.02, "momentum": 0.9},
        {"lr": 0.05, "nesterov": False, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"},
        split_muon, params, [like(rng, params) for _ in range(STEPS)],
        lambda g: torch.tensor(np.array(g)),
    )
    assert set(opt.state[0]) == set(theirs.state[tensors[0]]) == {"momentum_buffer"}


def round_trip_continues_exactly(make, split, params, grads):
    """3 steps, save (msgpack), load into a differently-stepped twin, 3 more steps: equal."""
    def step(opt, g):
        opt.grad = list(split(g))
        opt.step()

    original, restored = make(params), make(params)
    for g in grads[:3]:
        step(original, g), step(restored, g)
    fresh = make(params)
    step(fresh, grads[5])
    for group, source in zip(fresh.param_groups, restored.param_groups):
        group["params"] = source["params"]
    fresh.load_state_dict(
        flax.serialization.msgpack_restore(flax.serialization.to_bytes(original.state_dict()))
    )
    for g in grads[3:]:
        step(original, g), step(fresh, g)
    for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_muon_state_dict_round_trip_continues_exactly():
    rng = np.random.default_rng(4)
    params = muon_tree(rng, np.float32)

    def make(params):
        first, second = split_muon(jax.tree.map(np.copy, params))
        return Muon([{"params": first}, {"params": second, "nesterov": False}], lr=0.02)

    round_trip_continues_exactly(make, split_muon, params, [like(rng, params) for _ in range(6)])


def test_muon_rejects_non_matrices_and_complex_like_torch(torch_module):
    message = "Muon only supports 2D parameters whereas we found a parameter with size: torch.Size([3])"
    with pytest.raises(ValueError) as theirs:
        torch_module.optim.Muon([torch_module.zeros(2, 2), torch_module.zeros(3)])
    assert str(theirs.value) == message
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    for build in (lambda: muon().init(params), lambda: Muon(params)):
        with pytest.raises(ValueError) as ours:
            build()
        assert str(ours.value) == message
    with pytest.raises(ValueError, match=r"torch.Size\(\[\]\)"):
        muon().init(jnp.zeros(()))
    with pytest.raises(RuntimeError, match="^Muon does not support complex parameters$"):
        muon().init(jnp.zeros((2, 2), jnp.complex64))


def test_muon_jit_vmap_and_dtypes():
    rng = np.random.default_rng(5)
    params = jnp.asarray(rng.standard_normal((4, 5, 3)).astype(np.float32))
    grads = [jnp.asarray(rng.standard_normal((4, 5, 3)).astype(np.float32)) for _ in range(3)]
    tx = muon(lr=0.02)

    def solve(p, gs):
        state = tx.init(p)
        for g in gs:
            updates, state = tx.update(g, state, p)
            p = optim.apply_updates(p, updates)
        return p

    looped = jnp.stack([solve(params[i], [g[i] for g in grads]) for i in range(4)])
    np.testing.assert_array_equal(jax.vmap(solve)(params, jnp.stack(grads, 1)), looped)
    np.testing.assert_array_equal(jax.jit(solve)(params[0], [g[0] for g in grads]), looped[0])
    low = {"bf16": jnp.ones((3, 2), jnp.bfloat16), "f16": jnp.ones((2, 2), jnp.float16)}
    injected = optim.inject_hyperparams(muon, static_args="ns_steps")(lr=0.1)
    updates, _ = jax.jit(injected.update)(
        jax.tree.map(lambda p: jnp.full_like(p, 0.25), low), injected.init(low), low
    )
    new = optim.apply_updates(low, updates)
    assert jax.tree.map(lambda p: p.dtype, new) == jax.tree.map(lambda p: p.dtype, low)


# --------------------------------------------------------------------------------------------
# SparseAdam

SPARSE_ADAM_OPTIONS = [
    # torch's optim_inputs_func_sparseadam (tensor lr below)
    {},
    {"lr": 0.01},
    {"maximize": True},
    # harder
    {"lr": 0.05, "betas": (0.0, 0.99), "eps": 1e-6},
    {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3, "maximize": True},
]


def sparse_tree(rng, dtype):
    m = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return {"scalar": m(), "vector": m(5), "layers": [{"w": m(4, 3)}, (m(2, 3, 2),)], "embedding": m(10, 4)}


def sparse_grads(rng, params):
    """Gradients with about half of their entries zero (whole rows for the embedding)."""
    def one(path, p):
        g = rng.standard_normal(np.shape(p)).astype(np.asarray(p).dtype)
        if jax.tree_util.keystr(path) == "['embedding']":
            return g * (rng.random((g.shape[0], 1)) < 0.3)
        return g * (rng.random(np.shape(p)) < 0.5)

    return [jax.tree_util.tree_map_with_path(one, params) for _ in range(STEPS)]


def sparse_to_torch(torch):
    """numpy gradient -> torch sparse COO gradient holding its non-zero entries."""
    return lambda g: torch.tensor(np.array(g)).to_sparse()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SPARSE_ADAM_OPTIONS, ids=str)
def test_sparse_adam_trajectory_matches_torch_with_sparse_gradients(torch_module, dtype, options):
    torch = torch_module
    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(6)
        params = sparse_tree(rng, dtype)
        grads = sparse_grads(rng, params)
        reference = run_torch(
            torch, lambda t: torch.optim.SparseAdam(t, **options), params, grads,
            to_grad=sparse_to_torch(torch),
        )
        ours = run_jax(sparse_adam(**options), params, grads)
        assert_same_trajectory(ours, reference, dtype)
        # entries without gradient never move, bit for bit
        for before, after, g in zip([params] + ours[:-1], ours, grads):
            for b, a, gl in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(g)):
                np.testing.assert_array_equal(np.asarray(a)[gl == 0], np.asarray(b)[gl == 0])


def test_sparse_adam_matches_torch_embedding_style_uncoalesced_gradients(torch_module, x64):
    """Row-sparse (hybrid) gradients with repeated rows, as nn.Embedding(sparse=True) makes:
    torch coalesces (sums) the repeats; the JAX gradient is the dense sum."""
    torch = torch_module
    rng = np.random.default_rng(7)
    table = rng.standard_normal((12, 3))
    steps = []
    for _ in range(STEPS):
        rows = rng.integers(0, 12, size=5)
        steps.append((rows, rng.standard_normal((5, 3))))

    def sparse(step):
        rows, values = step
        return torch.sparse_coo_tensor(torch.tensor(rows)[None], torch.tensor(values), (12, 3),
                                       check_invariants=True)

    dense = [{"table": sparse(s).to_dense().numpy()} for s in steps]
    grads = iter(steps)
    reference = run_torch(
        torch, lambda t: torch.optim.SparseAdam(t, lr=0.03), {"table": table}, dense,
        to_grad=lambda g: sparse(next(grads)),
    )
    assert_same_trajectory(run_jax(sparse_adam(lr=0.03), {"table": table}, dense), reference, np.float64)


def test_sparse_adam_tensor_lr_matches_torch(torch_module):
    """float32, as torch's tensor lr also makes its per-step scalar arithmetic float32."""
    torch = torch_module
    rng = np.random.default_rng(8)
    params = sparse_tree(rng, np.float32)
    grads = sparse_grads(rng, params)
    reference = run_torch(torch, lambda t: torch.optim.SparseAdam(t, lr=torch.tensor(0.001)),
                          params, grads, to_grad=sparse_to_torch(torch))
    assert_same_trajectory(run_jax(sparse_adam(lr=jnp.asarray(0.001)), params, grads), reference,
                           np.float32)


def test_sparse_adam_schedule_matches_torch_with_lr_set_each_step(torch_module, x64):
    torch = torch_module
    rng = np.random.default_rng(8)
    params = sparse_tree(rng, np.float64)
    grads = sparse_grads(rng, params)
    schedule = lambda step: 0.05 * 0.9 ** step  # noqa: E731
    reference = run_torch(torch, lambda t: torch.optim.SparseAdam(t), params, grads,
                          to_grad=sparse_to_torch(torch), lrs=[schedule(k) for k in range(STEPS)])
    assert_same_trajectory(run_jax(sparse_adam(lr=schedule), params, grads), reference, np.float64)


def split_sparse(tree):
    return tree["layers"], {"scalar": tree["scalar"], "vector": tree["vector"], "embedding": tree["embedding"]}


def test_sparse_adam_class_with_two_groups_matches_torch(torch_module):
    torch = torch_module
    rng = np.random.default_rng(9)
    params = sparse_tree(rng, np.float32)
    opt, theirs, tensors = class_matches_torch(
        torch, SparseAdam, torch.optim.SparseAdam, {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.03, "eps": 1e-4, "maximize": True}, split_sparse, params,
        sparse_grads(rng, params), sparse_to_torch(torch),
    )
    assert set(opt.state[0]) == set(theirs.state[tensors[0]])


def test_sparse_adam_state_dict_round_trip_continues_exactly():
    rng = np.random.default_rng(10)
    params = sparse_tree(rng, np.float32)

    def make(params):
        first, second = split_sparse(jax.tree.map(np.copy, params))
        return SparseAdam([{"params": first}, {"params": second, "lr": 0.05}], lr=0.01)

    round_trip_continues_exactly(make, split_sparse, params, sparse_grads(rng, params)[:6])


def test_sparse_adam_rejects_complex_like_torch(torch_module):
    torch = torch_module
    with pytest.raises(ValueError) as theirs:
        torch.optim.SparseAdam([{"params": [torch.zeros(2)]},
                                {"params": [torch.zeros(2, dtype=torch.complex64)]}])
    real, cplx = jnp.zeros(2), jnp.zeros(2, jnp.complex64)
    with pytest.raises(ValueError) as ours:
        SparseAdam([{"params": [real]}, {"params": [cplx]}])
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match=r"^Complex params at indices \[\[0, 1\]\]: SparseAdam does "
                                         r"not support complex parameters$"):
        sparse_adam().init([real, cplx])


def find_adam_state(state):
    """The AdamState inside a (possibly injected) chain's state."""
    if isinstance(state, optim.AdamState):
        return state
    found = [s for s in map(find_adam_state, state) if s is not None] if isinstance(state, tuple) else []
    return found[0] if found else None


def test_sparse_adam_keeps_dtypes_under_jit():
    params = {"bf16": jnp.linspace(-1, 1, 8, dtype=jnp.bfloat16), "f16": jnp.ones(4, jnp.float16)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25).at[0].set(0), params)
    for tx in (sparse_adam(lr=0.1), optim.inject_hyperparams(sparse_adam)(lr=0.1)):
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        new = optim.apply_updates(params, updates)
        for name in params:
            assert new[name].dtype == params[name].dtype
            assert find_adam_state(state).exp_avg[name].dtype == params[name].dtype
            assert new[name][0] == params[name][0] and new[name][1] != params[name][1]


# --------------------------------------------------------------------------------------------
# Validation messages of the two dedicated algorithms (the table carries the other three's)

VALIDATION = [
    (muon, {"lr": -0.1}, "Learning rate should be >= 0 but is: -0.1"),
    (muon, {"momentum": -0.5}, "momentum should be >= 0 but is: -0.5"),
    (muon, {"weight_decay": -1}, "weight decay should be >= 0 but is: -1"),
    (muon, {"adjust_lr_fn": "arbitrary"}, "Adjust learning rate function arbitrary is not supported"),
    (muon, {"ns_steps": 100}, "Number of steps must be less than 100 for computational efficiency"),
    (muon, {"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
    (sparse_adam, {"lr": 0.0}, "Invalid learning rate: 0.0"),
    (sparse_adam, {"eps": 0.0}, "Invalid epsilon value: 0.0"),
    (sparse_adam, {"lr": 1e-2, "betas": (1.0, 0.0)}, "Invalid beta parameter at index 0: 1.0"),
    (sparse_adam, {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
]


@pytest.mark.parametrize("injected", [False, True], ids=["pure", "injected"])
@pytest.mark.parametrize("factory, options, message", VALIDATION)
def test_torch_messages(torch_module, factory, options, message, injected):
    torch_class = {muon: torch_module.optim.Muon, sparse_adam: torch_module.optim.SparseAdam}[factory]
    torch_options = {k: v for k, v in options.items() if k not in ("ns_steps", "ns_coefficients")}
    if torch_options == options:  # checked by torch's constructor (the rest at its first step)
        with pytest.raises(ValueError) as theirs:
            torch_class([torch_module.zeros(2, 2)], **options)
        assert str(theirs.value) == message
    static = "ns_steps" if factory is muon else ()
    build = optim.inject_hyperparams(factory, static_args=static) if injected else factory
    with pytest.raises(ValueError) as ours:
        build(**options)
    assert str(ours.value) == message


# --------------------------------------------------------------------------------------------
# Complex parameters, Adafactor's epsilon1 quirk


@pytest.mark.parametrize("factory, torch_name, options", [
    (rmsprop, "RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    (rmsprop, "RMSprop", {"lr": 0.01, "maximize": True}),
    (rprop, "Rprop", {"lr": 0.01, "etas": (0.3, 1.5)}),
    (rprop, "Rprop", {"maximize": True, "step_sizes": (1e-3, 0.1)}),
])
def test_complex_params_match_torch(torch_module, x64, factory, torch_name, options):
    rng = np.random.default_rng(11)
    cplx = lambda *shape: rng.standard_normal(shape) + 1j * rng.standard_normal(shape)  # noqa: E731
    params = {"z": cplx(3, 2), "r": rng.standard_normal(4), "s": cplx()}
    grads = [{"z": cplx(3, 2), "r": rng.standard_normal(4), "s": cplx()} for _ in range(STEPS)]
    torch_class = getattr(torch_module.optim, torch_name)
    reference = run_torch(torch_module, lambda t: torch_class(t, **options, foreach=False), params, grads)
    assert_same_trajectory(run_jax(factory(**options), params, grads), reference, np.float64)


def test_complex_class_state_is_the_real_view():
    opt = RMSprop({"z": jnp.ones((3,), jnp.complex64)}, lr=0.1, momentum=0.5)
    opt.grad = {"z": jnp.full((3,), 1 - 2j, jnp.complex64)}
    opt.step()
    assert opt.params["z"].dtype == jnp.complex64
    assert opt.state[0]["square_avg"].shape == (3, 2)


def test_adafactor_rejects_complex():
    for build in (lambda: adafactor().init(jnp.zeros(2, jnp.complex64)),
                  lambda: Adafactor([jnp.zeros(2, jnp.complex64)])):
        with pytest.raises(RuntimeError, match="^Adafactor does not support complex parameters$"):
            build()


def test_adafactor_epsilon1_comes_from_the_first_parameter_like_torch(torch_module, x64):
    """torch sets eps1 = finfo(first param's dtype).eps and keeps it for the group."""
    rng = np.random.default_rng(12)
    params = [rng.standard_normal((3, 4)).astype(np.float32) * 1e-3, rng.standard_normal(6) * 1e-3]
    # the vector's second moment (~1e-18) sits below float32's eps1**2 (~1.4e-14) but far above
    # float64's (~4.9e-32): which epsilon the group uses decides the vector's steps
    grads = [[rng.standard_normal((3, 4)).astype(np.float32) * 1e-5, rng.standard_normal(6) * 1e-9]
             for _ in range(STEPS)]
    reference = run_torch(
        torch_module, lambda t: torch_module.optim.Adafactor(t, lr=0.1, foreach=False), params, grads
    )
    ours = run_jax(adafactor(lr=0.1), params, grads)
    for step, (a, b) in enumerate(zip(ours, reference)):
        np.testing.assert_allclose(a[0], b[0], **TOLERANCE[np.float32], err_msg=str(step))
        np.testing.assert_allclose(a[1], b[1], **TOLERANCE[np.float64], err_msg=str(step))
    # a float64-first tree would have used float64's epsilon instead: the results differ
    assert not np.allclose(run_jax(adafactor(lr=0.1, eps=(2.0 ** -52, 1e-3)), params, grads)[-1][1],
                           ours[-1][1], rtol=1e-8, atol=0)


def test_adafactor_state_names_and_shapes_match_torch(torch_module):
    torch = torch_module
    params = {"m": np.ones((2, 3, 4), np.float32), "v": np.ones(5, np.float32), "s": np.ones((), np.float32)}
    opt = Adafactor(params)
    opt.grad = jax.tree.map(np.ones_like, params)
    opt.step()
    tensors = [torch.ones(2, 3, 4, requires_grad=True), torch.ones((), requires_grad=True),
               torch.ones(5, requires_grad=True)]  # jax.tree.leaves order: m, s, v
    theirs = torch.optim.Adafactor(tensors)
    for t in tensors:
        t.grad = torch.ones_like(t)
    theirs.step()
    for i, t in enumerate(tensors):
        ours = {k: v.shape for k, v in opt.state[i].items() if v.size}
        assert ours == {k: tuple(v.shape) for k, v in theirs.state[t].items()}


# --------------------------------------------------------------------------------------------
# Differentiating through the updates (the table's generic test needs RICH_OPTIONS entries)

GRADIENT_CASES = {
    "rmsprop": (rmsprop, {"momentum": 0.9, "centered": True, "weight_decay": 0.1}, (5,)),
    "rprop": (rprop, {"etas": (0.4, 1.3)}, (5,)),
    "adafactor": (adafactor, {"weight_decay": 0.1, "d": 1.5}, (3, 4)),
    "muon": (muon, {"momentum": 0.9}, (3, 4)),
    "sparse_adam": (sparse_adam, {"betas": (0.8, 0.99)}, (5,)),
}


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_gradient_through_updates_matches_finite_differences(name, x64):
    factory, options, shape = GRADIENT_CASES[name]
    rng = np.random.default_rng(13)
    params = jnp.asarray(rng.standard_normal(shape))
    grads = [jnp.asarray(rng.standard_normal(shape)) for _ in range(3)]

    def meta_loss(lr):
        tx = factory(**options, lr=lr)
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optim.apply_updates(p, updates)
        return jnp.sum(p ** 2)

    lr, h = 0.05, 1e-6
    finite = (meta_loss(lr + h) - meta_loss(lr - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(meta_loss)(lr), finite, rtol=1e-6)
