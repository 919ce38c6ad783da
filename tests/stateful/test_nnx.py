"""Flax nnx Modules as the stateful optimizers' params: same updates as flax's nnx.Optimizer,
submodules as groups, values (and RNG / batch-statistics changes) written back, one compile."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optim_jax as optim

warnings.filterwarnings("ignore", category=DeprecationWarning, module="flax")


class Net(nnx.Module):
    def __init__(self, seed: int, dropout: float = 0.0, batch_norm: bool = False):
        rngs = nnx.Rngs(seed)
        self.base = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs) if batch_norm else None
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.classifier = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        h = self.base(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.classifier(self.drop(jax.nn.relu(h)))


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def batches(n=4):
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield (jnp.asarray(rng.normal(size=(32, 8)), jnp.float32),
               jnp.asarray(rng.integers(0, 3, 32)))


def param_values(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def test_adam_on_a_module_matches_nnx_optimizer_with_optim_jax_and_optax():
    ours, flax_ours, flax_optax = Net(0, 0.2), Net(0, 0.2), Net(0, 0.2)
    opt = optim.Adam(ours, lr=1e-2, weight_decay=1e-3)
    references = [(flax_ours, nnx.Optimizer(flax_ours, optim.adam(1e-2, weight_decay=1e-3),
                                            wrt=nnx.Param)),
                  (flax_optax, nnx.Optimizer(flax_optax, optax.chain(
                      optax.add_decayed_weights(1e-3), optax.adam(1e-2)), wrt=nnx.Param))]

    @nnx.jit
    def reference_step(model, reference, x, y):  # nnx's own training step
        value, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        reference.update(model, grads)
        return value

    for x, y in batches():
        loss = opt.step(loss_fn, x, y)
        for model, reference in references:
            np.testing.assert_allclose(loss, reference_step(model, reference, x, y), rtol=1e-6)
    assert opt.params is ours
    for model, _ in references:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     param_values(ours), param_values(model))
    # Dropout drew a new key every step, as under nnx's own training loop.
    assert int(ours.drop.rngs.count[...]) == int(flax_ours.drop.rngs.count[...]) == 4


def test_submodule_groups_with_their_own_lr_and_a_closure_over_the_whole_model():
    model, reference = Net(1, 0.1), Net(1, 0.1)
    opt = optim.SGD([{"params": model.base}, {"params": model.classifier, "lr": 1e-3}],
                    lr=1e-1, momentum=0.9)
    pure = {"base": optim.sgd(1e-1, momentum=0.9), "classifier": optim.sgd(1e-3, momentum=0.9)}
    states = {k: tx.init(nnx.state(getattr(reference, k), nnx.Param)) for k, tx in pure.items()}

    @nnx.jit
    def reference_step(reference, states, x, y):  # the pure transforms, one per submodule
        grads = nnx.grad(loss_fn)(reference, x, y)
        for name, tx in pure.items():
            sub = nnx.state(getattr(reference, name), nnx.Param)
            updates, states[name] = tx.update(grads[name], states[name], sub)
            nnx.update(getattr(reference, name), optim.apply_updates(sub, updates))
        return states

    for x, y in batches():
        opt.step(lambda _, x, y: loss_fn(model, x, y), x, y)  # the whole model, captured
        states = reference_step(reference, states, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 param_values(model), param_values(reference))
    assert len(opt._compiled) == 1  # fresh lambdas, one program
    assert int(model.drop.rngs.count[...]) == 4
    assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0, 1], [2, 3]]
    assert opt.params[0] is model.base and opt.params[1] is model.classifier


def test_batch_statistics_changed_by_the_closure_are_written_back():
    model = Net(2, batch_norm=True)
    opt = optim.Adam(model, lr=1e-3)
    x, y = next(batches(1))
    expected = nnx.clone(model)
    expected(x)  # one training-mode forward pass updates the running statistics
    opt.step(loss_fn, x, y)
    np.testing.assert_allclose(model.norm.mean[...], expected.norm.mean[...], rtol=1e-6)
    np.testing.assert_allclose(model.norm.var[...], expected.norm.var[...], rtol=1e-6)
    assert not np.allclose(model.norm.mean[...], 0.0)


def test_backward_then_step_writes_back_and_state_dict_round_trips():
    model, twin = Net(3), Net(3)
    opt, other = optim.AdamW(model, lr=1e-2), optim.AdamW(twin, lr=1e-2)
    for x, y in batches(2):
        opt.zero_grad()
        opt.backward(loss_fn, x, y)
        opt.step()
        other.step(loss_fn, x, y)
    jax.tree.map(np.testing.assert_array_equal, param_values(model), param_values(twin))
    restored = optim.AdamW(Net(3), lr=1e-2)
    restored.load_state_dict(opt.state_dict())
    jax.tree.map(np.testing.assert_array_equal, restored.state[0]["exp_avg"],
                 opt.state[0]["exp_avg"])


def test_labels_mapped_over_a_modules_params_keep_no_variable_wrappers():
    # jax.tree.map over nnx.State returns nnx.Param-wrapped labels; they label as plain ones.
    model = Net(4)
    by_kernel = lambda p: jax.tree.map(lambda v: "wide" if v.ndim == 2 else "flat", p)  # noqa: E731
    opt = optim.Adam(optim.labelled(model, by_kernel, {"wide": {}, "flat": {"lr": 0.0}}), lr=0.1)
    bias, kernel = np.asarray(model.base.bias[...]), np.asarray(model.base.kernel[...])
    x, y = next(iter(batches(1)))
    opt.step(loss_fn, x, y)
    np.testing.assert_array_equal(model.base.bias[...], bias)
    assert not np.array_equal(model.base.kernel[...], kernel)
    with pytest.raises(ValueError, match="labels 'b' have no entry"):
        optim.Adam(optim.labelled(model, lambda p: jax.tree.map(lambda _: "b", p), {"a": {}}))


def test_variables_changed_through_the_captured_model_win_over_unchanged_group_copies():
    # The classifier group holds the dropout whose RNG counter the closure advances through
    # the captured model; the group's own (unused) copy must not write the old count back.
    rngs = nnx.Rngs(5)
    model = nnx.Sequential(nnx.Linear(8, 16, rngs=rngs),
                           nnx.Sequential(nnx.Dropout(0.5, rngs=rngs), nnx.Linear(16, 3, rngs=rngs)))
    opt = optim.Adam([{"params": model.layers[0]}, {"params": model.layers[1], "lr": 1e-4}])
    for x, y in batches(3):
        opt.step(lambda groups: loss_fn(model, x, y))
    assert int(model.layers[1].layers[0].rngs.count[...]) == 3
    assert len(opt._compiled) == 1


def test_lbfgs_fits_a_module_and_writes_the_solution_back(x64):
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(20, 4)))
    y = x @ jnp.arange(1.0, 5.0)[:, None] + 0.5
    opt = optim.LBFGS(model, line_search_fn="strong_wolfe", max_iter=100, tolerance_grad=1e-12,
                      tolerance_change=1e-15)
    opt.step(lambda model, x, y: jnp.mean((model(x) - y) ** 2), x, y)
    np.testing.assert_allclose(model.kernel[...].ravel(), [1.0, 2.0, 3.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(model.bias[...], [0.5], atol=1e-6)


def test_values_put_into_the_module_between_steps_are_where_the_next_step_starts():
    model, restored = Net(6), Net(7)
    opt = optim.SGD(model, lr=0.1)
    x, y = next(batches(1))
    opt.step(loss_fn, x, y)
    nnx.update(model, nnx.state(restored, nnx.Param))  # e.g. a checkpoint restored
    start = param_values(model)
    opt.step(loss_fn, x, y)
    grads = nnx.grad(loss_fn)(restored, x, y)
    expected = jax.tree.map(lambda p, g: p - 0.1 * np.asarray(g), start, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 param_values(model), expected)


def test_non_array_variables_are_not_taken_for_changes():
    class Tagged(nnx.Module):
        def __init__(self, tag):
            self.layer = nnx.Linear(8, 3, rngs=nnx.Rngs(0))
            self.tag = nnx.Variable(tag)

        def __call__(self, x):
            return self.layer(x)

    for tag in (1.0, "name"):
        model = Tagged(tag)
        opt = optim.Adam(model, lr=1e-3)
        for x, y in batches(2):
            opt.step(loss_fn, x, y)
        assert len(opt._compiled) == 1 and model.tag.get_value() == tag


class Tied(nnx.Module):
    """One Linear used twice (a tied encoder/decoder), one BatchNorm used twice."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.encoder = nnx.Linear(8, 8, rngs=rngs)
        self.decoder = self.encoder
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.norm_again = self.norm
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.norm(jax.nn.relu(self.encoder(x)))
        return self.head(self.drop(self.norm_again(self.decoder(h))))


@pytest.mark.parametrize("make", [lambda: Net(8, 0.2), lambda: Tied(9)], ids=["plain", "shared"])
def test_shared_submodules_stay_shared_as_under_nnx_optimizer(make):
    # A plain module crosses into the compiled step as a JAX pytree; one whose variables are
    # reached twice goes through nnx's graph, so the tied weight gets both uses' gradient and
    # the shared BatchNorm's statistics take both its updates.
    ours, theirs = make(), make()
    opt = optim.Adam(ours, lr=1e-2)
    reference = nnx.Optimizer(theirs, optim.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def reference_step(model, reference, x, y):
        value, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        reference.update(model, grads)
        return value

    for x, y in batches(3):
        np.testing.assert_allclose(opt.step(loss_fn, x, y), reference_step(theirs, reference, x, y),
                                   rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 param_values(ours), param_values(theirs))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 jax.tree.map(np.asarray, nnx.state(ours, nnx.Any(nnx.BatchStat, nnx.RngCount))),
                 jax.tree.map(np.asarray, nnx.state(theirs, nnx.Any(nnx.BatchStat, nnx.RngCount))))
    assert len(opt._compiled) == 1
    if isinstance(ours, Tied):
        assert ours.decoder is ours.encoder and ours.norm_again is ours.norm


class Deep(nnx.Module):
    """Batch norm, then five Linear layers (ten params, enough for contiguous buffers) with
    dropout between them."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(4)])
        self.norm = nnx.BatchNorm(8, use_scale=False, use_bias=False, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = self.norm(x)  # on the inputs: a bias before it would get no gradient, only noise
        for layer in self.layers:
            x = self.drop(jax.nn.relu(layer(x)))
        return self.head(x)


def test_a_module_with_many_params_steps_over_buffers_and_writes_every_step_back():
    ours, theirs = Deep(3), Deep(3)
    opt = optim.AdamW(ours, lr=1e-2, weight_decay=0.1)
    assert opt._records[0].packing is not None  # params and state in contiguous buffers
    reference = nnx.Optimizer(theirs, optim.adamw(1e-2, weight_decay=0.1), wrt=nnx.Param)

    @nnx.jit
    def reference_step(model, reference, x, y):
        value, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        reference.update(model, grads)
        return value

    def same_values():
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     param_values(ours), param_values(theirs))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     jax.tree.map(np.asarray, nnx.state(ours, nnx.Any(nnx.BatchStat, nnx.RngCount))),
                     jax.tree.map(np.asarray, nnx.state(theirs, nnx.Any(nnx.BatchStat, nnx.RngCount))))

    for x, y in batches(3):
        np.testing.assert_allclose(opt.step(loss_fn, x, y), reference_step(theirs, reference, x, y),
                                   rtol=1e-5)
        same_values()  # the module holds the new values after every step
    # Values put into the module between steps are where the next step starts, as in torch.
    restored = jax.tree.map(lambda v: v * 0.5, nnx.state(theirs, nnx.Param))
    nnx.update(ours, jax.tree.map(jnp.copy, restored))
    nnx.update(theirs, restored)
    x, y = next(batches(1))
    opt.step(loss_fn, x, y)
    reference_step(theirs, reference, x, y)
    same_values()
    assert len(opt._compiled) == 1
    # state_dict round trip: the state as torch lays it out, one entry per param
    state = opt.state_dict()
    assert len(state["state"]) == 10
    fresh = optim.AdamW(Deep(4), lr=1e-2, weight_decay=0.1)
    fresh.load_state_dict(state)
    jax.tree.map(np.testing.assert_array_equal, fresh.state_dict()["state"], state["state"])
