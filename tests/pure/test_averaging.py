"""optim_jax.averaging (the pure face of weight averaging) against live torch.optim.swa_utils:
SWA and EMA (constant decay and warm-up) averages after several updates in float64, one compile
across jitted updates with the old average donated, dtypes kept, torch's decay check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.averaging import UPDATES, snapshots, torch_average


def pure_average(averager, trajectory):
    update = jax.jit(averager.update, donate_argnums=1)
    state = averager.init(trajectory[0])
    for params in trajectory:
        state = update(params, state)
    return state


def timm_decay(decay, gamma=1.0, power=2 / 3):
    """timm's ModelEmaV3 warm-up decay as a function of the number of models averaged."""
    return lambda n: min(decay, 1 - (1 + float(n) / gamma) ** -power)


@pytest.mark.parametrize("case", ["swa", "ema", "ema-warmup"])
def test_average_matches_torch_in_float64(case, torch_module, x64):
    torch = torch_module
    trajectory = snapshots()
    swa_utils = torch.optim.swa_utils
    if case == "swa":
        averager, kwargs = optim.swa(), {}
    elif case == "ema":
        averager, kwargs = optim.ema(0.9), {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.9)}
    else:
        decay = timm_decay(0.99)
        averager = optim.ema(optim.ema_warmup(0.99))
        kwargs = {"avg_fn": lambda a, p, n: decay(n) * a + (1 - decay(n)) * p}
    state = pure_average(averager, trajectory)
    expected = torch_average(torch, trajectory, **kwargs)
    assert int(state.count) == UPDATES
    for got, want in zip(jax.tree.leaves(state.average), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if case == "swa":  # and it is the plain mean
        mean = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *trajectory)
        for got, want in zip(jax.tree.leaves(state.average), jax.tree.leaves(mean)):
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_ema_warmup_decays():
    decay = optim.ema_warmup(0.999, gamma=1.0, power=2 / 3, min_decay=0.1)
    values = [float(decay(n)) for n in (0, 1, 10, 10**6)]
    reference = timm_decay(0.999)
    assert values[0] == pytest.approx(0.1)  # 0 floored to min_decay
    assert values[1:3] == pytest.approx([reference(1), reference(10)], rel=1e-6)
    assert values[3] == pytest.approx(0.999)


def test_first_update_copies_and_later_ones_average():
    averager = optim.ema(0.5)
    state = averager.init({"w": jnp.zeros(2)})
    state = averager.update({"w": jnp.full(2, 4.0)}, state)
    np.testing.assert_array_equal(state.average["w"], [4.0, 4.0])  # copied, not averaged
    state = averager.update({"w": jnp.zeros(2)}, state)
    np.testing.assert_array_equal(state.average["w"], [2.0, 2.0])
    assert int(state.count) == 2


def test_jitted_update_compiles_once_and_donates_the_old_average(xla_compilations):
    trajectory = snapshots(np.float32)
    averager = optim.swa()
    update = jax.jit(averager.update, donate_argnums=1)
    state = averager.init(trajectory[0])
    before = xla_compilations()
    for params in trajectory:
        old = jax.tree.leaves(state.average)[0]
        state = update(params, state)
        assert old.is_deleted()
    assert xla_compilations() == before + 1
    assert int(state.count) == UPDATES


def test_init_copies_so_donation_never_deletes_the_params():
    params = {"w": jnp.arange(3.0)}
    averager = optim.swa()
    jax.jit(averager.update, donate_argnums=1)(params, averager.init(params))
    np.testing.assert_array_equal(params["w"], [0.0, 1.0, 2.0])


def test_leaves_keep_their_dtypes():
    params = {"f32": jnp.ones(2, jnp.float32), "bf16": jnp.ones(2, jnp.bfloat16),
              "int": jnp.array([4, 8], jnp.int32)}
    swa = optim.swa()
    for averager in (swa, optim.ema(0.9)):
        state = averager.init(params)
        for scale in (1, 3):
            state = jax.jit(averager.update)(jax.tree.map(lambda x: x * scale, params), state)
        assert jax.tree.map(lambda x: x.dtype, state.average) == jax.tree.map(
            lambda x: x.dtype, params)
        # Integers averaged in floats and truncated: SWA (4+12)/2 = 8, (8+24)/2 = 16; EMA
        # 4*0.9 + 12*0.1 = 4.8 -> 4, 8*0.9 + 24*0.1 = 9.6 -> 9.
        expected = [8, 16] if averager is swa else [4, 9]
        np.testing.assert_array_equal(state.average["int"], expected)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_ema_rejects_decay_outside_unit_interval_with_torchs_message(decay, torch_module):
    with pytest.raises(ValueError) as expected:
        torch_module.optim.swa_utils.get_ema_multi_avg_fn(decay)
    with pytest.raises(ValueError, match=None) as got:
        optim.ema(decay)
    assert str(got.value) == str(expected.value)
