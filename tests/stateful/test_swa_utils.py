"""optim_jax.swa_utils against live torch.optim.swa_utils: AveragedModel over a pytree and over
an nnx Module (SWA, EMA, custom averages, with and without buffers) in float64, one compile
across updates, donation, state_dict round trips through msgpack, SWALR's lr sequences (both
strategies, several groups, after another scheduler) and the pure swalr, update_bn's running
statistics against torch's BatchNorm, shardings kept across devices."""

import json
import subprocess
import sys
import textwrap
import warnings

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optim_jax as optim
from optim_jax import lr_scheduler, schedules, swa_utils
from helpers.averaging import UPDATES, snapshots, torch_average

# -- AveragedModel over a pytree ----------------------------------------------------------------

EMA = 0.95
AVERAGES = {  # name -> (optim_jax kwargs, torch kwargs builder)
    "swa-default": ({}, lambda su: {}),
    "swa-avg_fn": ({"avg_fn": swa_utils.get_swa_avg_fn()},
                   lambda su: {"avg_fn": su.get_swa_avg_fn()}),
    "swa-multi": ({"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
                  lambda su: {"multi_avg_fn": su.get_swa_multi_avg_fn()}),
    "ema-multi": ({"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(EMA)},
                  lambda su: {"multi_avg_fn": su.get_ema_multi_avg_fn(EMA)}),
    "ema-avg_fn": ({"avg_fn": swa_utils.get_ema_avg_fn(EMA)},
                   lambda su: {"avg_fn": su.get_ema_avg_fn(EMA)}),
    "custom": ({"avg_fn": lambda a, p, n: a + (p - a) * 2 / (n + 2)},
               lambda su: {"avg_fn": lambda a, p, n: a + (p - a) * 2 / (n + 2)}),
}


@pytest.fixture
def torch64(torch_module):
    """torch with float64 as its default dtype: its get_swa_multi_avg_fn computes the weight
    1 / (n + 1) in the default dtype, which in float32 costs float64 averages 1e-8."""
    previous = torch_module.get_default_dtype()
    torch_module.set_default_dtype(torch_module.float64)
    yield torch_module
    torch_module.set_default_dtype(previous)


@pytest.mark.parametrize("name", AVERAGES)
def test_averaged_pytree_matches_torch(name, torch64, x64):
    kwargs, torch_kwargs = AVERAGES[name]
    trajectory = snapshots()
    model = swa_utils.AveragedModel(trajectory[0], **kwargs)
    for params in trajectory:
        model.update_parameters(params)
    expected = torch_average(torch64, trajectory, **torch_kwargs(torch64.optim.swa_utils))
    assert int(model.n_averaged) == UPDATES
    assert jax.tree.structure(model.module) == jax.tree.structure(trajectory[0])
    for got, want in zip(jax.tree.leaves(model.module), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


LOW_PRECISION = ("float32", "bfloat16", "float16")


def mixed_trajectory(dtypes, integers):
    """Updates of float leaves of ``dtypes`` and, with ``integers``, an int32 leaf whose
    averages land on and next to whole numbers (a constant counter; 9 six times then -40)."""
    rng = np.random.default_rng(3)
    counters = [np.array([3, 9, 0, 6, 100], np.int32)] * 6 + [np.array([3, -40, 41, 16, 101],
                                                                        np.int32)]
    return [[rng.standard_normal(257).astype(np.float32).astype(jnp.dtype(d)) for d in dtypes]
            + ([counters[t]] if integers else []) for t in range(len(counters))]


def torch_buffers_average(torch, trajectory, **kwargs):
    """torch's AveragedModel(use_buffers=True) over a module holding the leaves as buffers."""
    module = torch.nn.Module()
    for i, leaf in enumerate(trajectory[0]):
        module.register_buffer(f"b{i}", torch.from_numpy(np.asarray(leaf, np.float32)).to(
            getattr(torch, np.asarray(leaf).dtype.name)))
    averaged = torch.optim.swa_utils.AveragedModel(module, use_buffers=True, **kwargs)
    for leaves in trajectory:
        for i, leaf in enumerate(leaves):
            buffer = getattr(module, f"b{i}")
            buffer.copy_(torch.from_numpy(np.asarray(leaf, np.float32)).to(buffer.dtype))
        averaged.update_parameters(module)
    return [getattr(averaged.module, f"b{i}").float().numpy() for i in range(len(trajectory[0]))]


@pytest.mark.parametrize("name, integers", [
    ("swa-avg_fn", True), ("swa-multi", False), ("ema-multi", True), ("ema-avg_fn", True),
    ("swa-default", True)])
def test_low_precision_and_integer_leaves_are_averaged_bit_for_bit_as_torch(
        name, integers, torch_module):
    """16-bit floats computed in float32 and rounded as torch's kernels round them; integer
    buffers (a step counter) averaged in float32 and truncated as torch's copy_ truncates, a
    whole-number average landing on that number. (torch's multi-tensor SWA raises for integer
    buffers; its default on CPU divides, which optim_jax's default does for integers only.)"""
    kwargs, torch_kwargs = AVERAGES[name]
    trajectory = mixed_trajectory(LOW_PRECISION if name != "swa-default" else (), integers)
    model = swa_utils.AveragedModel([jnp.asarray(x) for x in trajectory[0]], **kwargs)
    for leaves in trajectory:
        model.update_parameters([jnp.asarray(x) for x in leaves])
    expected = torch_buffers_average(torch_module, trajectory,
                                     **torch_kwargs(torch_module.optim.swa_utils))
    for got, want in zip(model.module, expected):
        np.testing.assert_array_equal(np.asarray(got, np.float32), want)
    if integers:
        assert model.module[-1].dtype == jnp.int32


def test_updates_compile_once_and_donate_only_the_average(xla_compilations):
    trajectory = [jax.tree.map(jnp.asarray, tree) for tree in snapshots(np.float32)]
    model = swa_utils.AveragedModel(trajectory[0], multi_avg_fn=swa_utils.get_ema_multi_avg_fn())
    before = xla_compilations()
    for params in trajectory:
        old = jax.tree.leaves(model.module)[0]
        model.update_parameters(params)
        assert old.is_deleted()
    assert xla_compilations() == before + 1
    assert not any(x.is_deleted() for tree in trajectory for x in jax.tree.leaves(tree))


def test_mismatched_model_is_rejected():
    model = swa_utils.AveragedModel({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"model\['w'\] has shape \(4,\)"):
        model.update_parameters({"w": jnp.zeros(4)})
    with pytest.raises(ValueError, match=r"not structured as .* \(first leaf in one only: "
                                         r"model\['v'\]\)"):
        model.update_parameters({"v": jnp.zeros(3)})
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        swa_utils.AveragedModel({}, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    inplace = swa_utils.AveragedModel({"w": jnp.zeros(3)}, multi_avg_fn=lambda a, p, n: None)
    with pytest.raises(TypeError, match="must return the new averaged params"):
        inplace.update_parameters({"w": jnp.ones(3)})


def test_state_dict_round_trips_through_msgpack():
    trajectory = [jax.tree.map(jnp.asarray, tree) for tree in snapshots(np.float32)]
    model = swa_utils.AveragedModel(trajectory[0])
    for params in trajectory[:3]:
        model.update_parameters(params)
    saved = model.state_dict()
    data = flax.serialization.to_bytes(saved)
    for params in trajectory[3:]:
        model.update_parameters(params)
    expected = model.state_dict()
    # The saved dict survived the later (donating) updates; a fresh model resumes from it.
    restored = swa_utils.AveragedModel(trajectory[0])
    restored.load_state_dict(flax.serialization.from_bytes(saved, data))
    assert int(restored.n_averaged) == 3
    for params in trajectory[3:]:
        restored.update_parameters(params)
    for got, want in zip(jax.tree.leaves(restored.state_dict()), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)
    before = jax.tree.leaves(restored.module)[0]
    bad = dict(saved, module={**saved["module"], "vector": np.zeros(6, np.float32)})
    with pytest.raises(ValueError, match=r"state_dict\['module'\]\['vector'\] has shape \(6,\)"):
        restored.load_state_dict(bad)
    assert jax.tree.leaves(restored.module)[0] is before  # left untouched


# -- AveragedModel over an nnx Module -------------------------------------------------------------


class Net(nnx.Module):
    """Linear, BatchNorm, ReLU, Linear, BatchNorm: torch's Sequential of the same layers."""

    def __init__(self, rngs: nnx.Rngs, dtype=jnp.float64):
        self.l1 = nnx.Linear(4, 3, rngs=rngs, param_dtype=dtype)
        self.bn1 = nnx.BatchNorm(3, rngs=rngs, param_dtype=dtype)
        self.l2 = nnx.Linear(3, 2, rngs=rngs, param_dtype=dtype)
        self.bn2 = nnx.BatchNorm(2, rngs=rngs, param_dtype=dtype)
        for bn in (self.bn1, self.bn2):  # nnx keeps batch statistics in float32 by default
            bn.mean.set_value(bn.mean.get_value().astype(dtype))
            bn.var.set_value(bn.var.get_value().astype(dtype))

    def __call__(self, x):
        return self.bn2(self.l2(jax.nn.relu(self.bn1(self.l1(x)))))


def torch_net(torch):
    nn = torch.nn
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2),
                         nn.BatchNorm1d(2)).double()


def torch_values(net: Net) -> list:
    """net's values in the order of the torch Sequential's state_dict (but num_batches_tracked)."""
    values = []
    for linear, bn in ((net.l1, net.bn1), (net.l2, net.bn2)):
        values += [linear.kernel.get_value().T, linear.bias.get_value()]
        values += [v.get_value() for v in (bn.scale, bn.bias, bn.mean, bn.var)]
    return [np.asarray(v) for v in values]


def load_torch(torch, module, values) -> None:
    entries = [v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")]
    with torch.no_grad():
        for tensor, value in zip(entries, values):
            tensor.copy_(torch.tensor(value))


def randomize(net: Net, rng: np.random.Generator) -> None:
    for _, variable in nnx.iter_graph(net):
        if isinstance(variable, (nnx.Param, nnx.BatchStat)):
            value = variable.get_value()
            variable.set_value(jnp.asarray(rng.uniform(0.5, 1.5, value.shape), value.dtype))


@pytest.mark.parametrize("use_buffers", [False, True])
def test_averaged_nnx_module_matches_torch(use_buffers, torch_module, x64):
    torch = torch_module
    rng = np.random.default_rng(1)
    net, reference = Net(nnx.Rngs(0)), torch_net(torch)
    averaged = swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(EMA),
                                       use_buffers=use_buffers)
    torch_averaged = torch.optim.swa_utils.AveragedModel(
        reference, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(EMA),
        use_buffers=use_buffers)
    for _ in range(UPDATES):
        randomize(net, rng)
        load_torch(torch, reference, torch_values(net))
        averaged.update_parameters(net)
        torch_averaged.update_parameters(reference)
    assert isinstance(averaged.module, Net) and averaged.module is not net
    want = [v.numpy() for k, v in torch_averaged.module.state_dict().items()
            if not k.endswith("num_batches_tracked")]
    for got, expected in zip(torch_values(averaged.module), want):
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    # Without use_buffers the statistics are the model's own, which torch copies too.
    np.testing.assert_array_equal(averaged.module.bn1.mean.get_value() ==
                                  net.bn1.mean.get_value(), not use_buffers)


def test_nnx_updates_compile_once_and_state_dict_round_trips(xla_compilations, x64):
    rng = np.random.default_rng(2)
    net = Net(nnx.Rngs(0))
    averaged = swa_utils.AveragedModel(net, use_buffers=True)
    randomize(net, rng)
    before = xla_compilations()
    for _ in range(4):
        averaged.update_parameters(net)
        randomize(net, rng)
    assert xla_compilations() == before + 1
    saved = averaged.state_dict()
    assert set(saved) == {"module", "n_averaged"} and "kernel" in saved["module"]["l1"]
    data = flax.serialization.to_bytes(saved)
    other = swa_utils.AveragedModel(Net(nnx.Rngs(1)))
    other.load_state_dict(flax.serialization.from_bytes(other.state_dict(), data))
    assert int(other.n_averaged) == 4
    for got, want in zip(torch_values(other.module), torch_values(averaged.module)):
        np.testing.assert_array_equal(got, want)


# -- SWALR --------------------------------------------------------------------------------------

LRS = (0.1, 0.05, 0.02)
SWA_LRS = [0.01, 0.02, 0.004]
COSINE_STEPS, SWA_STEPS = 5, 15


def lr_sequence(lr_module, swa_module, optimizer, anneal_epochs, strategy):
    """Each step's lrs in torch's SWA recipe: both schedulers built first, a cosine phase,
    then SWALR (it anneals from whatever rate the cosine left)."""
    cosine = lr_module.CosineAnnealingLR(optimizer, T_max=10)
    swa = swa_module.SWALR(optimizer, swa_lr=SWA_LRS, anneal_epochs=anneal_epochs,
                           anneal_strategy=strategy)
    lrs = []
    for step in range(COSINE_STEPS + SWA_STEPS):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        (cosine if step < COSINE_STEPS else swa).step()
    return lrs, swa


def three_groups(torch=None):
    if torch is None:
        return optim.SGD([{"params": jnp.zeros(1), "lr": lr} for lr in LRS], lr=1.0)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in LRS]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=1.0)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 4])
def test_swalr_matches_torch(strategy, anneal_epochs, torch_module):
    torch = torch_module
    with warnings.catch_warnings():
        # Optimizer steps would change nothing but the warning that the scheduler steps first.
        warnings.simplefilter("ignore", UserWarning)
        want, torch_swa = lr_sequence(torch.optim.lr_scheduler, torch.optim.swa_utils,
                                      three_groups(torch), anneal_epochs, strategy)
        opt = three_groups()
        got, swa = lr_sequence(lr_scheduler, swa_utils, opt, anneal_epochs, strategy)
    assert got == want  # torch's floats, to the bit
    assert [g["swa_lr"] for g in opt.param_groups] == SWA_LRS
    assert swa.get_last_lr() == torch_swa.get_last_lr()
    state = swa.state_dict()
    assert state == torch_swa.state_dict()
    # The pure schedule from the rate the cosine left, to rounding.
    for g, swa_lr in enumerate(SWA_LRS):
        schedule = schedules.swalr(want[COSINE_STEPS][g], swa_lr, anneal_epochs, strategy)
        host = [schedule(t) for t in range(SWA_STEPS)]
        array = jax.jit(jax.vmap(schedule))(jnp.arange(SWA_STEPS))
        expected = [lrs[g] for lrs in want[COSINE_STEPS:]]
        np.testing.assert_allclose(host, expected, rtol=1e-14)
        np.testing.assert_allclose(array, expected, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_swalr_state_dict_resumes():
    opt = three_groups()
    swa = swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=6, anneal_strategy="linear")
    for _ in range(3):
        swa.step()
    saved = swa.state_dict()
    resumed = swa_utils.SWALR(three_groups(), swa_lr=0.5)  # another strategy, another length
    resumed.optimizer.param_groups[:] = [dict(g) for g in opt.param_groups]
    resumed.load_state_dict(saved)
    for _ in range(5):
        swa.step()
        resumed.step()
        assert resumed.get_last_lr() == swa.get_last_lr()


@pytest.mark.parametrize("kwargs", [
    {"swa_lr": [0.1, 0.2]}, {"swa_lr": 0.1, "anneal_strategy": "exp"},
    {"swa_lr": 0.1, "anneal_epochs": -1}, {"swa_lr": 0.1, "anneal_epochs": 2.0},
], ids=["swa_lr-count", "strategy", "negative-epochs", "float-epochs"])
def test_swalr_validation_gives_torchs_messages(kwargs, torch_module):
    with pytest.raises(ValueError) as expected:
        torch_module.optim.swa_utils.SWALR(three_groups(torch_module), **kwargs)
    opt = three_groups()
    with pytest.raises(ValueError) as got:
        swa_utils.SWALR(opt, **kwargs)
    assert str(got.value) == str(expected.value)
    assert all("swa_lr" not in group for group in opt.param_groups)


# -- update_bn ----------------------------------------------------------------------------------

BATCH, BATCHES = 16, 5


def test_update_bn_matches_torchs_cumulative_statistics(torch_module, x64):
    torch = torch_module
    rng = np.random.default_rng(3)
    net, reference = Net(nnx.Rngs(0)), torch_net(torch)
    randomize(net, rng)
    load_torch(torch, reference, torch_values(net))
    loader = [(rng.standard_normal((BATCH, 4)) * 2 + 1, np.zeros(BATCH)) for _ in range(BATCHES)]
    net.eval()
    averaged = swa_utils.AveragedModel(net)
    swa_utils.update_bn(loader, averaged)
    reference.eval()
    torch.optim.swa_utils.update_bn([(torch.tensor(x), y) for x, y in loader], reference)
    for bn, torch_bn in ((averaged.module.bn1, reference[1]), (averaged.module.bn2, reference[4])):
        np.testing.assert_allclose(bn.mean.get_value(), torch_bn.running_mean.numpy(),
                                   rtol=1e-10)
        # nnx records each batch's biased variance, torch the unbiased one.
        np.testing.assert_allclose(bn.var.get_value() * BATCH / (BATCH - 1),
                                   torch_bn.running_var.numpy(), rtol=1e-10)
        assert bn.use_running_average and bn.momentum == 0.99  # the eval mode, restored
    assert not reference.training


def test_update_bn_on_a_module_without_batch_norm_or_a_pytree():
    averaged = swa_utils.AveragedModel(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    x = jnp.ones((1, 2))
    swa_utils.update_bn([x], averaged)  # nothing to do, as torch
    np.testing.assert_array_equal(averaged(x), averaged.module(x))
    with pytest.raises(TypeError, match="needs an nnx Module"):
        swa_utils.update_bn([jnp.ones((1, 2))], swa_utils.AveragedModel({"w": jnp.ones(2)}))


# -- shardings ---------------------------------------------------------------------------------

SHARDED = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    import optim_jax as optim
    from optim_jax import swa_utils

    mesh = jax.make_mesh((4,), ("x",))
    specs = {"w": P("x", None), "b": P()}
    params = {"w": jnp.ones((8, 3)), "b": jnp.ones(3)}
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}
    def same(tree):
        return all(tree[k].sharding.is_equivalent_to(params[k].sharding, tree[k].ndim)
                   for k in params)
    model = swa_utils.AveragedModel(params, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    kept = [same(model.module)]
    for _ in range(3):
        model.update_parameters(params)
        kept.append(same(model.module))
    model.load_state_dict(model.state_dict())
    kept.append(same(model.module))
    averager = optim.swa()
    state = jax.jit(averager.update, donate_argnums=1)(params, averager.init(params))
    kept.append(same(state.average))
    print(json.dumps(kept))
""")


def test_averages_keep_shardings():
    out = subprocess.run([sys.executable, "-c", SHARDED], check=True, capture_output=True,
                         text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True] * 6
