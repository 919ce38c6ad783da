"""The pure schedules plugged into the pure transforms, against torch.optim + lr_scheduler:
parameters of sgd(lr=schedule) and inject_hyperparams(sgd)(lr=..., momentum=...), the
ReduceLROnPlateau transform in a chain, dtypes, large steps, and the recursive CosineAnnealingLR
after an outside lr change. (Every schedule's lr sequence is checked in test_lr_scheduler.)"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.schedule_cases import BASE_LRS, CASES, jax_optimizer, torch_optimizer
from helpers.trajectories import committed
from optim_jax import lr_scheduler, schedules

PARAM_STEPS = 20
SGD_CASES = [case for case in CASES if case.optimizer == "sgd"]


def torch_params(torch, case, grads):
    """torch.optim.SGD (momentum 0.9, two groups) and case's scheduler, over float64 tensors."""
    params = [torch.zeros(2, dtype=torch.float64, requires_grad=True),
              torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": BASE_LRS[1]}],
                          lr=BASE_LRS[0], momentum=0.9, foreach=False)
    scheduler = case.build(torch.optim.lr_scheduler, opt)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        opt.step()
        scheduler.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: c.id)
def test_sgd_with_a_schedule_follows_torch_sgd_and_scheduler(torch_module, x64, case):
    """Per-group schedules through partition; a cycled momentum through inject_hyperparams."""
    rng = np.random.default_rng(0)
    grads = [(rng.standard_normal(2), rng.standard_normal(3)) for _ in range(PARAM_STEPS)]

    def group(g):
        if case.momentum is None:
            return optim.sgd(lr=case.pure(g), momentum=0.9)
        return optim.inject_hyperparams(optim.sgd)(lr=case.pure(g), momentum=case.momentum(g))

    tx = optim.partition({0: group(0), 1: group(1)}, labels=[0, 1])
    params = committed([jnp.zeros(2), jnp.zeros(3)])  # so the step compiles once
    state = committed(tx.init(params))

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    for step_grads in grads:
        params, state = step(params, state, [jnp.asarray(g) for g in step_grads])
    for got, want in zip(params, torch_params(torch_module, case, grads)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_reduce_lr_on_plateau_in_a_chain_follows_torch(torch_module, x64):
    """chain(sgd(lr=1), reduce_lr_on_plateau(lr=...)): the value reaches it through chain."""
    rng = np.random.default_rng(1)
    values = 1.0 / (1.0 + 0.2 * np.arange(40)) + 0.05 * rng.standard_normal(40)
    grads = rng.standard_normal((40, 3))
    options = dict(factor=0.5, patience=2, cooldown=1, threshold=0.05, min_lr=0.01)

    param = torch_module.zeros(3, dtype=torch_module.float64, requires_grad=True)
    opt = torch_module.optim.SGD([param], lr=0.1, momentum=0.9, foreach=False)
    scheduler = torch_module.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    for g, value in zip(grads, values):
        param.grad = torch_module.tensor(g)
        opt.step()
        scheduler.step(value)
    assert opt.param_groups[0]["lr"] < 0.1 / 4  # several reductions happened

    tx = optim.chain(optim.sgd(lr=1.0, momentum=0.9),
                     schedules.reduce_lr_on_plateau(lr=0.1, **options))
    params, state = jnp.zeros(3), tx.init(jnp.zeros(3))
    step = jax.jit(lambda p, s, g, v: tx.update(g, s, p, value=v))
    for g, value in zip(grads, values):
        updates, state = step(params, state, jnp.asarray(g), value)
        params = optim.apply_updates(params, updates)
    np.testing.assert_allclose(params, param.detach().numpy(), rtol=1e-12, atol=1e-15)
    assert float(state[1].lr) == opt.param_groups[0]["lr"]


def test_schedules_compute_in_the_widest_enabled_float():
    schedule = schedules.cosine_annealing_lr(0.1, T_max=10)
    assert isinstance(schedule(3), float)  # a Python step: torch's float64 host arithmetic
    assert schedule(jnp.asarray(3)).dtype == jnp.float32
    with jax.enable_x64(True):
        assert schedule(jnp.asarray(3)).dtype == jnp.float64
    np.testing.assert_allclose(schedule(jnp.asarray(3)), schedule(3), rtol=1e-6)


def test_inject_hyperparams_takes_a_schedule_and_records_its_value():
    schedule = schedules.one_cycle_lr(0.1, total_steps=50)
    tx = optim.inject_hyperparams(optim.adam)(lr=schedule)
    params = jnp.ones(3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(5):
        _, state = update(jnp.ones(3), state, params)
        np.testing.assert_allclose(state.hyperparams["lr"], schedule(step), rtol=1e-6)


def test_warm_restarts_find_late_cycles_exactly(x64):
    """Far into the schedule, the cycle found from the step (integers, no logarithm) is the one
    torch's step() counting reaches."""
    schedule = schedules.cosine_annealing_warm_restarts(0.1, T_0=10, T_mult=3)
    steps = [10 * (3**k - 1) // 2 + d for k in range(1, 17) for d in (-1, 0, 1)]
    steps = [s for s in steps if s < 2**31 - 1] + [2**31 - 1]
    on_device = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
    np.testing.assert_allclose(on_device, [schedule(s) for s in steps], rtol=1e-12)
    # A restart is at each cycle start: back to the base lr.
    assert schedule(10 * (3**15 - 1) // 2) == 0.1


def test_cosine_annealing_class_is_recursive_after_an_outside_lr_change(torch_module):
    """Documented: torch's class (and ours) continues from a changed lr; the closed form doesn't."""
    runs = []
    for module, opt in ((torch_module.optim.lr_scheduler, torch_optimizer(torch_module, "sgd")),
                        (lr_scheduler, jax_optimizer("sgd"))):
        scheduler = module.CosineAnnealingLR(opt, T_max=40, eta_min=0.001)
        lrs = []
        for step in range(80):
            if step == 15:
                opt.param_groups[0]["lr"] = 0.5
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                scheduler.step()
        runs.append(lrs)
    assert runs[0] == runs[1]
    closed_form = [schedules.cosine_annealing_lr(BASE_LRS[0], 40, 0.001)(t) for t in range(80)]
    assert not np.allclose(runs[1][16:], closed_form[16:])


# (torch's scheduler, optim_jax's schedule) makers over an optimizer / a base rate
CHAIN_POOL = {
    "exponential": (lambda m, o: m.ExponentialLR(o, gamma=0.97),
                    lambda lr: schedules.exponential_lr(lr, 0.97)),
    "step": (lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
             lambda lr: schedules.step_lr(lr, step_size=7, gamma=0.5)),
    "linear to 0": (lambda m, o: m.LinearLR(o, 1.0, 0.0, total_iters=45),
                    lambda lr: schedules.linear_lr(lr, 1.0, 0.0, total_iters=45)),
    "cosine 9": (lambda m, o: m.CosineAnnealingLR(o, T_max=9),
                 lambda lr: schedules.cosine_annealing_lr(lr, T_max=9)),
    # minima and restarts of these two fall on one another's steps
    "cosine 2": (lambda m, o: m.CosineAnnealingLR(o, T_max=2),
                 lambda lr: schedules.cosine_annealing_lr(lr, T_max=2)),
    "cosine 3": (lambda m, o: m.CosineAnnealingLR(o, T_max=3),
                 lambda lr: schedules.cosine_annealing_lr(lr, T_max=3)),
    "cosine 13": (lambda m, o: m.CosineAnnealingLR(o, T_max=13),
                  lambda lr: schedules.cosine_annealing_lr(lr, T_max=13)),
    "lambda": (lambda m, o: m.LambdaLR(o, lambda t: 1 / (1 + 0.05 * t)),
               lambda lr: schedules.lambda_lr(lr, lambda t: 1 / (1 + 0.05 * t))),
    "warm restarts": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=11),
                      lambda lr: schedules.cosine_annealing_warm_restarts(lr, T_0=11)),
}


def random_chain(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(n) for n in rng.choice(list(CHAIN_POOL), size=int(rng.integers(2, 5)),
                                       replace=False)]


CHAINS = [random_chain(seed) for seed in range(8)] + [
    ["cosine 2", "cosine 3"], ["cosine 3", "exponential", "cosine 2"]]  # collisions, no outright


@pytest.mark.parametrize("names", CHAINS, ids=lambda names: "+".join(names))
def test_random_chains_follow_torchs_chained_scheduler(names, torch_module, x64):
    """Chains of factors, cosines (which add to the rate after each minimum) and outright
    schedules, in random orders: the pure chain is torch's recursion, on the host and jitted."""
    torch = torch_module
    params = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chain = torch.optim.lr_scheduler.ChainedScheduler(
            [CHAIN_POOL[n][0](torch.optim.lr_scheduler, opt) for n in names])
        expected = []
        for _ in range(120):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            chain.step()
    pure = schedules.chained_scheduler([CHAIN_POOL[n][1](0.1) for n in names], 0.1)
    host = [pure(t) for t in range(120)]
    jitted = jax.jit(jax.vmap(pure))(jnp.arange(120))
    for got in (np.array(host), np.asarray(jitted)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15, err_msg=str(names))


def test_a_chained_cosine_with_eta_min_is_refused():
    with pytest.raises(ValueError, match=r"schedulers\[1\] is a cosine annealing with eta_min"):
        schedules.chained_scheduler(
            [schedules.exponential_lr(0.1, 0.9), schedules.cosine_annealing_lr(0.1, 10, 0.01)], 0.1)
