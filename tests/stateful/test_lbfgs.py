"""L-BFGS against live torch.optim.LBFGS (float64): losses, params and evaluation counts after
every step; convergence, vmap, float32, non-finite objectives, compile counts, state_dict."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import optim_jax as optim


def rosenbrock(x, xp=jnp):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def logistic(params, x, y, xp=jnp):
    """L2-regularised binary logistic regression; params = {'w': (d, 1), 'b': (1,)}."""
    z = (x @ params["w"])[:, 0] + params["b"][0]
    softplus = xp.logaddexp(z, 0 * z) if xp is jnp else xp.nn.functional.softplus(z)
    return xp.mean(softplus - y * z) + 1e-3 * xp.sum(params["w"] ** 2)


def digits_binary(n=200):
    x, y = load_digits(return_X_y=True)
    x = (x[:n] / 16.0).astype(np.float64)
    return x, (y[:n] % 2).astype(np.float64)


class TorchLBFGS:
    def __init__(self, torch, params, loss, **options):
        self.torch, self.loss = torch, loss
        self.tensors = jax.tree.map(lambda a: torch.tensor(np.array(a), requires_grad=True), params)
        self.leaves = jax.tree.leaves(self.tensors)
        self.opt = torch.optim.LBFGS(self.leaves, **options)

    def step(self):
        def closure():
            self.opt.zero_grad()
            value = self.loss(self.tensors)
            value.backward()
            return value

        return float(self.opt.step(closure).detach())

    def params(self):
        return [t.detach().numpy() for t in self.leaves]

    def evals(self):
        return self.opt.state[self.leaves[0]]["func_evals"]


def compare(torch, params, jax_loss, torch_loss, steps, **options):
    ours = optim.LBFGS(params, **options)
    theirs = TorchLBFGS(torch, params, torch_loss, **options)
    for step in range(steps):
        expected = theirs.step()
        got = float(ours.step(jax_loss))
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12, err_msg=f"loss, step {step}")
        for a, b in zip(jax.tree.leaves(ours.params), theirs.params()):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-8, atol=1e-12,
                                       err_msg=f"params, step {step}")
        assert int(ours.state[0]["func_evals"]) == theirs.evals(), f"evaluations, step {step}"
        assert int(ours.state[0]["n_iter"]) == theirs.opt.state[theirs.leaves[0]]["n_iter"]


ROSENBROCK_CASES = [
    # (dimension, line_search_fn, history_size, max_iter, steps): 20-d Rosenbrock amplifies
    # rounding (torch against itself with x0 moved by one ulp drifts as fast), so its runs are
    # as long as torch's own sensitivity keeps below 1e-8.
    (2, None, 100, 20, 6),
    (2, None, 2, 5, 6),
    (2, "strong_wolfe", 100, 20, 5),
    (2, "strong_wolfe", 3, 4, 6),
    (20, None, 5, 1, 14),
    (20, None, 10, 4, 3),
    (20, "strong_wolfe", 100, 7, 6),
    (20, "strong_wolfe", 5, 7, 3),
]


@pytest.mark.parametrize("n, line_search_fn, history_size, max_iter, steps", ROSENBROCK_CASES)
def test_rosenbrock_matches_torch(torch_module, x64, n, line_search_fn, history_size, max_iter, steps):
    x0 = jnp.asarray([-1.2, 1.0] * (n // 2))
    compare(torch_module, x0, rosenbrock, lambda t: rosenbrock(t, torch_module), steps,
            line_search_fn=line_search_fn, history_size=history_size, max_iter=max_iter)


@pytest.mark.parametrize("line_search_fn, history_size, max_iter", [
    (None, 5, 10), (None, 20, 20), ("strong_wolfe", 5, 10), ("strong_wolfe", 20, 20),
])
def test_logistic_regression_pytree_matches_torch(torch_module, x64, line_search_fn, history_size, max_iter):
    x, y = digits_binary()
    params = {"w": jnp.zeros((64, 1)), "b": jnp.zeros(1)}
    tx, ty = torch_module.tensor(x), torch_module.tensor(y)
    compare(torch_module, params, lambda p: logistic(p, x, y), lambda p: logistic(p, tx, ty, torch_module),
            4, line_search_fn=line_search_fn, history_size=history_size, max_iter=max_iter, lr=0.5)


def test_drift_on_an_ill_conditioned_run_is_no_larger_than_torchs_own(torch_module, x64):
    """Over a long 20-d run, ours vs torch stays within 100x of torch vs torch started one ulp
    away: the differences are torch's own rounding sensitivity, not a different algorithm."""
    x0 = np.array([-1.2, 1.0] * 10)
    options = dict(line_search_fn="strong_wolfe", history_size=5, max_iter=7)
    loss = lambda t: rosenbrock(t, torch_module)  # noqa: E731
    ours = optim.LBFGS(jnp.asarray(x0), **options)
    reference = TorchLBFGS(torch_module, x0, loss, **options)
    nudged = TorchLBFGS(torch_module, np.nextafter(x0, np.inf), loss, **options)
    for _ in range(8):
        ours.step(rosenbrock), reference.step(), nudged.step()
    drift = np.max(np.abs(np.asarray(ours.params) - reference.params()[0]))
    own = np.max(np.abs(nudged.params()[0] - reference.params()[0]))
    assert own > 0 and drift <= 100 * own + 1e-12


def test_converges_on_rosenbrock_100_and_digits():
    with jax.enable_x64(True):
        opt = optim.LBFGS(jnp.asarray([-1.2, 1.0] * 50), line_search_fn="strong_wolfe", max_iter=200)
        for _ in range(5):
            opt.step(rosenbrock)
        # torch's stopping rules (loss change < tolerance_change) end the solve here
        assert float(rosenbrock(opt.params)) < 1e-8
        np.testing.assert_allclose(opt.params, 1.0, atol=1e-3)
        x, y = digits_binary(1000)
        opt = optim.LBFGS({"w": jnp.zeros((64, 1)), "b": jnp.zeros(1)}, line_search_fn="strong_wolfe",
                          max_iter=100, tolerance_grad=1e-9)
        opt.step(logistic, x, y)
        grads = jax.grad(logistic)(opt.params, x, y)
        assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-6


def test_vmap_solves_many_problems_as_separate_solves():
    with jax.enable_x64(True):
        starts = jnp.stack([jnp.asarray([-1.2 + 0.1 * k, 1.0 - 0.05 * k]) for k in range(8)])
        targets = jnp.linspace(0.5, 2.0, 8)
        options = dict(line_search_fn="strong_wolfe", max_iter=200, history_size=10,
                       tolerance_grad=1e-10)

        def solve(x0, a):
            fun = lambda x: (a - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2  # noqa: E731
            state = optim.lbfgs(**options).init(x0)
            _, x, state = optim.lbfgs_step(fun, x0, state, **options)
            return x, state.func_evals

        xs, evals = jax.jit(jax.vmap(solve))(starts, targets)
        for k in range(8):
            x, e = jax.jit(solve)(starts[k], targets[k])
            np.testing.assert_allclose(xs[k], x, rtol=1e-12)
            assert int(evals[k]) == int(e)
        np.testing.assert_allclose(xs[:, 0], targets, rtol=1e-4)


def test_float32_converges():
    opt = optim.LBFGS(jnp.asarray([-1.2, 1.0], jnp.float32), line_search_fn="strong_wolfe", max_iter=100)
    opt.step(rosenbrock)
    assert opt.params.dtype == jnp.float32
    np.testing.assert_allclose(opt.params, [1.0, 1.0], atol=1e-3)


def test_a_non_finite_objective_stops_cleanly_and_says_so():
    def fun(x):  # NaN beyond x = 3: the first fixed step lands there
        return jnp.where(x[0] > 3.0, jnp.nan, jnp.sum((x - 5.0) ** 2))

    opt = optim.LBFGS(jnp.asarray([0.0, 0.0]), lr=10.0, max_iter=1000)
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient"):
        opt.step(fun)
    assert bool(opt.state[0]["nonfinite"])
    assert np.all(np.isfinite(np.asarray(opt.params)))
    assert int(opt.state[0]["func_evals"]) <= 3


class TraceCounter:
    n = 0


def test_repeated_steps_with_fresh_closures_compile_once():
    traces = TraceCounter()  # not a list: a captured container's contents are part of the key
    opt = optim.LBFGS(jnp.zeros(3), max_iter=5)
    for k in range(6):
        target = jnp.full(3, float(k))

        def closure(p):
            traces.n += 1  # runs only while tracing (once per evaluation site in the loop)
            return jnp.sum((p - target) ** 2)

        opt.step(closure)
        if k == 0:
            after_first = traces.n
    assert after_first > 0 and traces.n == after_first
    np.testing.assert_allclose(opt.params, 5.0, rtol=1e-5)


def test_pure_update_equals_torch_with_max_iter_1(torch_module, x64):
    x0 = jnp.asarray([-1.2, 1.0])
    theirs = TorchLBFGS(torch_module, x0, lambda t: rosenbrock(t, torch_module), max_iter=1,
                        max_eval=25, line_search_fn="strong_wolfe")
    tx = optim.lbfgs(max_eval=25, line_search_fn="strong_wolfe")
    state, x = tx.init(x0), x0

    @jax.jit
    def iterate(x, state):
        value, grad = jax.value_and_grad(rosenbrock)(x)
        updates, state = tx.update(grad, state, x, value=value, value_fn=rosenbrock)
        return optim.apply_updates(x, updates), state

    for step in range(10):
        theirs.step()
        x, state = iterate(x, state)
        np.testing.assert_allclose(x, theirs.params()[0], rtol=1e-10, err_msg=f"step {step}")


def test_state_dict_round_trip_continues_identically():
    with jax.enable_x64(True):
        make = lambda: optim.LBFGS(jnp.asarray([-1.2, 1.0, -1.2, 1.0]), max_iter=3, history_size=4,  # noqa: E731
                                   line_search_fn="strong_wolfe")
        a, b = make(), make()
        for _ in range(3):
            a.step(rosenbrock), b.step(rosenbrock)
        saved = a.state_dict()
        assert {"d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss",
                "n_iter", "func_evals"} <= set(saved["state"][0])
        c = make()
        c.step(rosenbrock)  # different state, same structure
        c.param_groups[0]["params"] = jnp.asarray(np.asarray(a.params))
        c.load_state_dict(saved)
        for _ in range(3):
            a.step(rosenbrock), c.step(rosenbrock)
        np.testing.assert_array_equal(np.asarray(a.params), np.asarray(c.params))


def test_state_is_per_parameter_and_round_trips_on_a_pytree():
    """The vectors are pytrees like the params: each parameter's entry holds its slice of the
    direction, gradient and history (``history_size`` rows of its shape); ``ro`` sits under
    parameter 0 and scalars repeat, as torch keeps one per parameter."""
    with jax.enable_x64(True):
        x, y = digits_binary()
        make = lambda: optim.LBFGS({"w": jnp.zeros((64, 1)), "b": jnp.zeros(1)}, max_iter=4,  # noqa: E731
                                   history_size=3, line_search_fn="strong_wolfe")
        a = make()
        for _ in range(2):
            a.step(logistic, x, y)
        saved = a.state_dict()
        shapes = {i: {k: np.shape(v) for k, v in entry.items()} for i, entry in saved["state"].items()}
        for i, shape in ((0, (1,)), (1, (64, 1))):  # parameter order: the tree's leaves, b then w
            assert shapes[i]["d"] == shapes[i]["prev_flat_grad"] == shape
            assert shapes[i]["old_dirs"] == shapes[i]["old_stps"] == (3, *shape)
            assert shapes[i]["n_iter"] == ()
        assert shapes[0]["ro"] == (3,) and "ro" not in shapes[1]
        c = make()
        c.param_groups[0]["params"] = jax.tree.map(jnp.array, a.params)
        c.load_state_dict(saved)
        for _ in range(2):
            a.step(logistic, x, y), c.step(logistic, x, y)
        for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params)):
            np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def test_errors():
    with pytest.raises(ValueError, match="LBFGS doesn't support per-parameter options \\(parameter groups\\)"):
        optim.LBFGS([{"params": jnp.ones(2)}, {"params": jnp.ones(3)}])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.LBFGS(jnp.ones(2), lr=-1)
    with pytest.raises(ValueError, match="only 'strong_wolfe' is supported"):
        optim.LBFGS(jnp.ones(2), line_search_fn="backtracking")
    with pytest.raises(RuntimeError, match="LBFGS.step needs a closure"):
        optim.LBFGS(jnp.ones(2)).step()


def test_pure_update_with_a_fixed_step_needs_no_value_fn():
    tx = optim.lbfgs(lr=0.5)
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    grads = {"w": jnp.array([0.5, 1.0]), "b": jnp.array(-0.5)}
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))(
        grads, tx.init(params), params)
    first_step = 0.5 * min(1.0, 1.0 / 2.0)  # torch's first step: min(1, 1/|g|_1) * lr
    np.testing.assert_allclose(updates["w"], [-0.5 * first_step, -1.0 * first_step], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.5 * first_step, rtol=1e-6)
    assert int(state.func_evals) == 0


def nudged_starts(x0, count=4, size=1e-7):
    """``count`` float32 copies of ``x0`` moved by ``size`` relative (absolute at zeros), each
    coordinate up or down at random: torch's own sensitivity to where it starts."""
    rng = np.random.default_rng(0)

    def nudge(a):
        a = np.asarray(a, np.float64)
        sign = rng.choice([-1.0, 1.0], a.shape)
        return (a * (1 + size * sign) + (a == 0) * size * sign).astype(np.float32)

    return [jax.tree.map(nudge, x0) for _ in range(count)]


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


FLOAT32_CASES = [
    # (name, line_search_fn, lr): float32, x64 off. The objectives and torch's kernels (its
    # x + t * d is a fused multiply-add, its sums pair differently) differ from XLA's by an
    # ulp here and there, which L-BFGS amplifies as it amplifies torch's own start nudges.
    ("rosenbrock-2", "strong_wolfe", 0.01),
    ("rosenbrock-20", "strong_wolfe", 1.0),
    ("logistic", "strong_wolfe", 0.01),
    ("logistic", None, 1.0),
]


@pytest.mark.parametrize("name, line_search_fn, lr", FLOAT32_CASES)
def test_float32_drift_is_within_torchs_own(torch_module, name, line_search_fn, lr):
    """float32: ours vs torch stays within 4x of torch vs torch started 1e-7 away (the largest
    of four nudges), step after step. torch keeps the step length and the line search's
    bounds as Python floats (float64) until they meet a tensor; so does optim_jax
    (``numerics.Mixed``, double-float without x64)."""
    torch = torch_module
    if name == "logistic":
        x, y = digits_binary()
        x, y = x.astype(np.float32), y.astype(np.float32)
        tx, ty = torch.tensor(x), torch.tensor(y)
        x0 = {"w": np.zeros((64, 1), np.float32), "b": np.zeros(1, np.float32)}
        ours_loss, torch_loss = (lambda p: logistic(p, x, y)), (lambda p: logistic(p, tx, ty, torch))
    else:
        x0 = np.array([-1.2, 1.0] * (int(name.split("-")[1]) // 2), np.float32)
        ours_loss, torch_loss = rosenbrock, (lambda t: rosenbrock(t, torch))
    options = dict(lr=lr, line_search_fn=line_search_fn, history_size=10, max_iter=20)
    ours = optim.LBFGS(jax.tree.map(jnp.asarray, x0), **options)
    reference = TorchLBFGS(torch, x0, torch_loss, **options)
    nudged = [TorchLBFGS(torch, start, torch_loss, **options) for start in nudged_starts(x0)]
    for step in range(4):
        ours.step(ours_loss), reference.step(), [n.step() for n in nudged]
        expected = flat(reference.params())
        assert flat(ours.params).dtype == np.float32
        drift = np.max(np.abs(flat(ours.params) - expected))
        own = max(np.max(np.abs(flat(n.params()) - expected)) for n in nudged)
        assert own > 0 and drift <= 4 * own, (step, drift, own)


def within_an_ulp(ours, value):
    expected = np.float32(value)
    return abs(np.float32(ours) - expected) <= np.spacing(np.abs(expected))


def test_mixed_scalars_round_as_torchs_floats_and_tensors(torch_module):
    """``numerics.Mixed`` (x64 off) against torch's own mixing of Python floats and float32
    0-d tensors, on the line search's expressions: float-only arithmetic keeps float64's
    precision (``3 * (f1 - f2) / (x1 - x2)`` with nearby steps), a tensor operand makes the
    result a float32 tensor rounded as torch rounds it, and Python's min/max pick as torch."""
    torch = torch_module
    from optim_jax.numerics import Mixed, py_max, py_min

    rng = np.random.default_rng(1)
    for _ in range(50):
        t_prev, t = 0.01, 0.01 * (1 + 1e-5 * (1 + rng.random()))  # five digits cancel
        f1, f2 = (float(np.float32(v)) for v in rng.standard_normal(2))
        g = torch.tensor(np.float32(rng.standard_normal()))
        floats = 3 * (f1 - f2) / (t_prev - t), t + 0.01 * (t - t_prev), t * 10
        ours = (3 * (Mixed.host(f1, jnp.float32) - f2) / (Mixed.host(t_prev, jnp.float32) - t),
                Mixed.host(t, jnp.float32) + 0.01 * (Mixed.host(t, jnp.float32) - t_prev),
                Mixed.host(t, jnp.float32) * 10)
        for value, mixed in zip(floats, ours):
            # double-float keeps ~48 bits: 1e-8 relative even where t - t_prev cancels 5
            # digits (float32 arithmetic: ~1e-2 there)
            assert not bool(mixed.tensor)
            np.testing.assert_allclose(float(mixed.hi) + float(mixed.lo), value, rtol=1e-8)
            assert within_an_ulp(mixed.hi, value)
        mixed_g = Mixed.of_tensor(jnp.asarray(g.numpy()))
        for theirs, mixed in [
            (g + g - 3 * (f1 - f2) / (t_prev - t), mixed_g + mixed_g - ours[0]),
            (t - (t - t_prev) * (g / (g + 1)), Mixed.host(t, jnp.float32)
             - (Mixed.host(t, jnp.float32) - t_prev) * (mixed_g / (mixed_g + 1))),
            (max(g, floats[1]), py_max(mixed_g, ours[1])),
            (min(floats[2], g), py_min(ours[2], mixed_g)),
        ]:
            assert bool(mixed.tensor) == isinstance(theirs, torch.Tensor)
            assert within_an_ulp(mixed.hi, float(theirs))
