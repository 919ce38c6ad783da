"""optim_jax.lr_scheduler and optim_jax.schedules against live torch.optim.lr_scheduler: every
scheduler's lr (and cycled momentum) sequence over 300 steps with two param groups, state_dict
round trips, torch's errors, step(epoch), warnings, and a scheduled training run that compiles
its step once."""

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from helpers.schedule_cases import BASE_LRS, CASES, OPTIMIZERS, STEPS, jax_optimizer, torch_optimizer
from optim_jax import lr_scheduler, schedules


def follow(optimizer, scheduler, steps, step_optimizer=True):
    """The (lr, momentum) of each group before each of ``steps`` (optimizer and) scheduler
    steps."""
    seen = []
    for _ in range(steps):
        seen.append([(g["lr"], g["momentum"] if "momentum" in g else g["betas"][0])
                     for g in optimizer.param_groups])
        if step_optimizer:
            optimizer.step()
        scheduler.step()
    return seen


def column(seen, group, index):
    return np.array([row[group][index] for row in seen])


def assert_close_to_torch(got, want, scale):
    """Equal to 1e-12 relative; where torch's value is an exact 0 up to its own rounding (a
    recursion ending at -1.7e-18), equally close to 0."""
    residue = np.abs(want) <= 1e-15 * abs(scale)
    np.testing.assert_allclose(got[~residue], want[~residue], rtol=1e-12, atol=0)
    assert np.all(np.abs(got[residue]) <= 1e-15 * abs(scale))


@pytest.fixture
def torch_lr_scheduler(torch_module):
    return torch_module.optim.lr_scheduler


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sequences_match_torch(torch_module, torch_lr_scheduler, case):
    torch_opt = torch_optimizer(torch_module, case.optimizer)
    torch_sched = case.build(torch_lr_scheduler, torch_opt)
    expected = follow(torch_opt, torch_sched, STEPS)

    opt = jax_optimizer(case.optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no "lr_scheduler.step() before optimizer.step()"
        sched = case.build(lr_scheduler, opt)
        # The stateful classes do torch's host arithmetic in torch's order: equal to the bit.
        assert follow(opt, sched, STEPS) == expected
    assert sched.get_last_lr() == torch_sched.get_last_lr()
    assert getattr(sched, "last_epoch", None) == getattr(torch_sched, "last_epoch", None)

    # The pure schedules of both groups (lr, and momentum where cycled): on the host, and in
    # one compiled program both vmapped over the steps and step by step (scalar, in a loop).
    pure = [(make(g), column(expected, g, index)) for g in range(2)
            for make, index in ((case.pure, 0), (case.momentum, 1)) if make is not None]

    def evaluate(t):
        return [schedule(t) for schedule, _ in pure]

    with jax.enable_x64(True):
        steps = jnp.arange(STEPS, dtype=jnp.int32)  # the dtype of the transforms' step count
        vmapped, jitted = jax.jit(lambda ts: (jax.vmap(evaluate)(ts), jax.lax.map(evaluate, ts)))(
            steps)
        host = np.array([evaluate(t) for t in range(STEPS)]).T
    for (_, want), *got in zip(pure, host, vmapped, jitted):
        for values in got:
            assert np.asarray(values).dtype == np.float64
            assert_close_to_torch(np.asarray(values), want, scale=want[0])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_round_trip_midway_continues_identically(torch_module, torch_lr_scheduler,
                                                            case):
    half = STEPS // 2
    opt = jax_optimizer(case.optimizer)
    sched = case.build(lr_scheduler, opt)
    opt.step()  # once, before the scheduler (the sequence test steps both throughout)
    follow(opt, sched, half, step_optimizer=False)
    saved, saved_opt = sched.state_dict(), opt.state_dict()

    torch_opt = torch_optimizer(torch_module, case.optimizer)
    torch_sched = case.build(torch_lr_scheduler, torch_opt)
    follow(torch_opt, torch_sched, half)
    assert saved == torch_sched.state_dict()  # torch's layout and values

    expected = follow(opt, sched, half, step_optimizer=False)
    fresh = jax_optimizer(case.optimizer)
    resumed = case.build(lr_scheduler, fresh)
    fresh.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    fresh.step()
    assert follow(fresh, resumed, half, step_optimizer=False) == expected


def bare_optimizer(module):
    """An optimizer with neither momentum nor betas (torch's Adagrad; a plain SGD for us)."""
    if module is lr_scheduler:
        class Plain(optim.Optimizer):
            transform = staticmethod(lambda lr=0.1: optim.sgd(lr))

        return Plain([jnp.zeros(2)])
    import torch

    return torch.optim.Adagrad([torch.zeros(2, requires_grad=True)])


def new_group(module):
    if module is lr_scheduler:
        return {"params": jnp.zeros(4)}
    import torch

    return {"params": [torch.zeros(4, requires_grad=True)]}


def stepped(scheduler, steps):
    for _ in range(steps):
        scheduler.step()


def plateau_after_a_new_group(module, optimizer):
    """A reduction after a group was added to an optimizer given one min_lr per group."""
    scheduler = module.ReduceLROnPlateau(optimizer, patience=0, min_lr=[0.0, 0.0])
    optimizer.add_param_group(new_group(module))
    scheduler.step(1.0)
    scheduler.step(2.0)


class Invalid(NamedTuple):
    """``build(module, optimizer)`` raises; so does ``pure()``, the same; messages are compared
    up to ``cut`` (where torch's names its own optimizer's repr)."""

    id: str
    build: Callable[[Any, Any], Any]
    pure: Callable[[], Any] | None
    cut: str | None = None


ERRORS = [
    Invalid("not-an-optimizer", lambda m, o: m.StepLR(object(), 3), None),
    Invalid("lr_lambdas-count", lambda m, o: m.LambdaLR(o, [lambda t: 1.0]), None),
    Invalid("lr_lambda-not-callable", lambda m, o: m.MultiplicativeLR(o, 3),
     lambda: schedules.multiplicative_lr(0.1, 3)),
    Invalid("constant-factor", lambda m, o: m.ConstantLR(o, factor=1.5),
     lambda: schedules.constant_lr(0.1, factor=1.5)),
    Invalid("linear-start", lambda m, o: m.LinearLR(o, start_factor=0),
     lambda: schedules.linear_lr(0.1, start_factor=0)),
    Invalid("linear-end", lambda m, o: m.LinearLR(o, end_factor=1.5),
     lambda: schedules.linear_lr(0.1, end_factor=1.5)),
    Invalid("T_0", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0),
     lambda: schedules.cosine_annealing_warm_restarts(0.1, T_0=0)),
    Invalid("T_mult", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2.0),
     lambda: schedules.cosine_annealing_warm_restarts(0.1, T_0=3, T_mult=2.0)),
    Invalid("eta_min", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, eta_min="0"),
     lambda: schedules.cosine_annealing_warm_restarts(0.1, T_0=3, eta_min="0")),
    Invalid("negative-epoch", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3).step(-1), None),
    Invalid("cyclic-mode", lambda m, o: m.CyclicLR(o, 0.01, 0.1, mode="sine"),
     lambda: schedules.cyclic_lr(0.01, 0.1, mode="sine")),
    Invalid("cyclic-lr-count", lambda m, o: m.CyclicLR(o, [0.01], 0.1), None),
    Invalid("cyclic-momentum-count",
            lambda m, o: m.CyclicLR(o, 0.01, 0.1, max_momentum=[0.9] * 3), None),
    Invalid("cycle-momentum-unsupported",
            lambda m, o: m.CyclicLR(bare_optimizer(m), 0.01, 0.1), None),
    Invalid("one-cycle-no-steps", lambda m, o: m.OneCycleLR(o, 0.1),
     lambda: schedules.one_cycle_lr(0.1)),
    Invalid("one-cycle-total", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=0),
     lambda: schedules.one_cycle_lr(0.1, total_steps=0)),
    Invalid("one-cycle-epochs", lambda m, o: m.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3),
     lambda: schedules.one_cycle_lr(0.1, epochs=0, steps_per_epoch=3)),
    Invalid("one-cycle-steps_per_epoch",
            lambda m, o: m.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=1.5),
     lambda: schedules.one_cycle_momentum(epochs=2, steps_per_epoch=1.5)),
    Invalid("one-cycle-pct_start-int",
            lambda m, o: m.OneCycleLR(o, 0.1, total_steps=9, pct_start=1),
     lambda: schedules.one_cycle_lr(0.1, total_steps=9, pct_start=1)),
    Invalid("one-cycle-pct_start", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=9, pct_start=1.5),
     lambda: schedules.one_cycle_momentum(total_steps=9, pct_start=1.5)),
    Invalid("one-cycle-anneal",
            lambda m, o: m.OneCycleLR(o, 0.1, total_steps=9, anneal_strategy="cosine"),
     lambda: schedules.one_cycle_lr(0.1, total_steps=9, anneal_strategy="cosine")),
    Invalid("one-cycle-max_lr-count", lambda m, o: m.OneCycleLR(o, [0.1] * 3, total_steps=9), None),
    Invalid("one-cycle-momentum-unsupported",
     lambda m, o: m.OneCycleLR(bare_optimizer(m), 0.1, total_steps=9), None),
    Invalid("one-cycle-past-the-end", lambda m, o: stepped(m.OneCycleLR(o, 0.1, total_steps=2), 3),
     None),
    Invalid("plateau-factor", lambda m, o: m.ReduceLROnPlateau(o, factor=1.0),
     lambda: schedules.reduce_lr_on_plateau(factor=1.0)),
    Invalid("plateau-mode", lambda m, o: m.ReduceLROnPlateau(o, mode="avg"),
     lambda: schedules.reduce_lr_on_plateau(mode="avg")),
    Invalid("plateau-threshold-mode", lambda m, o: m.ReduceLROnPlateau(o, threshold_mode="pct"),
     lambda: schedules.reduce_lr_on_plateau(threshold_mode="pct")),
    Invalid("plateau-min_lr-count", lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.0] * 3), None),
    Invalid("plateau-group-added", plateau_after_a_new_group, None),
    Invalid("resume-without-initial_lr", lambda m, o: m.StepLR(o, 3, last_epoch=4), None),
    Invalid("sequential-empty", lambda m, o: m.SequentialLR(o, [], []),
     lambda: schedules.sequential_lr([], [])),
    Invalid("sequential-milestones", lambda m, o: m.SequentialLR(o, [m.StepLR(o, 3)], [5]),
     lambda: schedules.sequential_lr([schedules.step_lr(0.1, 3)], [5])),
    Invalid("sequential-plateau",
            lambda m, o: m.SequentialLR(o, [m.ReduceLROnPlateau(o)], []), None),
    Invalid("sequential-not-a-scheduler", lambda m, o: m.SequentialLR(o, [3], []), None),
    Invalid("sequential-other-optimizer",
     lambda m, o: m.SequentialLR(o, [m.StepLR(bare_optimizer(m), 3)], []), None, " has "),
    Invalid("chained-empty", lambda m, o: m.ChainedScheduler([]),
     lambda: schedules.chained_scheduler([], 0.1)),
    Invalid("chained-plateau", lambda m, o: m.ChainedScheduler([m.ReduceLROnPlateau(o)]), None),
]


@pytest.mark.parametrize("invalid", ERRORS, ids=lambda e: e.id)
def test_invalid_arguments_raise_torchs_errors(torch_module, torch_lr_scheduler, invalid):
    def message(error):
        return str(error).split(invalid.cut)[0] if invalid.cut else str(error)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the past-the-end case steps no optimizer
        with pytest.raises(Exception) as torch_error:
            invalid.build(torch_lr_scheduler, torch_optimizer(torch_module, "sgd"))
        with pytest.raises(type(torch_error.value)) as error:
            invalid.build(lr_scheduler, jax_optimizer("sgd"))
    assert message(error.value) == message(torch_error.value)
    if invalid.pure is not None:
        with pytest.raises(type(torch_error.value)) as pure_error:
            invalid.pure()
        assert message(pure_error.value) == message(torch_error.value)


@pytest.mark.parametrize("build", [
    lambda m, o: m.StepLR(o, step_size=4, gamma=0.5),
    lambda m, o: m.MultiStepLR(o, milestones=[3, 9, 9], gamma=0.5),
    lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=8),
    lambda m, o: m.ExponentialLR(o, gamma=0.9),
    lambda m, o: m.CosineAnnealingLR(o, T_max=12, eta_min=0.01),
    lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2),
    lambda m, o: m.LambdaLR(o, lambda t: 1 / (1 + t)),
    lambda m, o: m.LinearLR(o, start_factor=1 / 3, end_factor=0.0, total_iters=21),
    lambda m, o: m.PolynomialLR(o, total_iters=20, power=1.5),
], ids=["StepLR", "MultiStepLR", "ConstantLR", "ExponentialLR", "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts", "LambdaLR", "LinearLR", "PolynomialLR"])
def test_deprecated_step_epoch_uses_torchs_closed_form(torch_module, torch_lr_scheduler, build):
    epochs = [3, 10, 7, 25, 26, 2.5]
    seen = {}
    for module, opt in ((torch_lr_scheduler, torch_optimizer(torch_module, "sgd")),
                        (lr_scheduler, jax_optimizer("sgd"))):
        scheduler = build(module, opt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the epoch argument is deprecated
            for epoch in epochs:
                opt.step()
                scheduler.step(epoch)
                seen.setdefault(module, []).append(scheduler.get_last_lr())
    assert seen[lr_scheduler] == seen[torch_lr_scheduler]


def test_step_order_and_get_lr_warnings_as_torch(torch_module, torch_lr_scheduler):
    for module, opt in ((torch_lr_scheduler, torch_optimizer(torch_module, "sgd")),
                        (lr_scheduler, jax_optimizer("sgd"))):
        scheduler = module.StepLR(opt, 3)
        with pytest.warns(UserWarning, match=r"step\(\)` before `optimizer.step\(\)`"):
            scheduler.step()
        with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
            scheduler.get_lr()
        opt.step()
        with pytest.warns(UserWarning, match=r"The epoch parameter in `scheduler.step\(\)`"):
            scheduler.step(4)


PLATEAU = [
    dict(mode="min", factor=0.5, patience=4, threshold=1e-2, cooldown=3, min_lr=0.01),
    dict(mode="max", factor=0.5, patience=2, threshold=0.01, threshold_mode="abs",
         min_lr=[0.02, 1e-3], eps=4e-3),
    dict(mode="max", factor=0.3, patience=6, threshold=5e-3, cooldown=1),
    dict(mode="min", factor=0.7, patience=0, threshold=0.05, threshold_mode="abs"),
]


def plateau_metrics(mode, seed=0):
    """A noisy, slowly improving metric: reductions, cooldowns, improvements and the min_lr."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS)
    loss = 1.0 / (1.0 + 0.05 * t) + 0.02 * rng.standard_normal(STEPS)
    return loss if mode == "min" else 1.0 - loss


@pytest.mark.parametrize("options", PLATEAU,
                         ids=lambda o: f"{o['mode']}-{o.get('threshold_mode', 'rel')}")
def test_reduce_lr_on_plateau_matches_torch_in_both_faces(torch_module, torch_lr_scheduler,
                                                          options):
    metrics = plateau_metrics(options["mode"])
    runs = []
    for module, opt in ((torch_lr_scheduler, torch_optimizer(torch_module, "sgd")),
                        (lr_scheduler, jax_optimizer("sgd"))):
        scheduler = module.ReduceLROnPlateau(opt, **options)
        lrs = []
        for value in metrics:
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.step()
            scheduler.step(value)
        runs.append((np.array(lrs), scheduler.state_dict()))
    (expected, torch_state), (lrs, state) = runs
    assert len(set(expected[:, 0])) > 2  # the metric did trigger reductions
    np.testing.assert_array_equal(lrs, expected)
    assert state == torch_state

    # The pure transform multiplies each update by the rate in effect before its value is seen.
    with jax.enable_x64(True):
        for g, base_lr in enumerate(BASE_LRS):
            min_lr = options.get("min_lr", 0.0)
            min_lr = min_lr[g] if isinstance(min_lr, list) else min_lr
            tx = schedules.reduce_lr_on_plateau(lr=base_lr, **{**options, "min_lr": min_lr})

            @jax.jit
            def run(values):
                def body(state, value):
                    update, state = tx.update(jnp.ones(()), state, value=value)
                    return state, update
                return jax.lax.scan(body, tx.init(jnp.zeros(())), values)

            final, used = run(jnp.asarray(metrics))
            np.testing.assert_allclose(used, expected[:, g], rtol=1e-12, atol=0)
            assert int(final.last_epoch) == STEPS
            assert int(final.num_bad_epochs) == torch_state["num_bad_epochs"]
            assert int(final.cooldown_counter) == torch_state["cooldown_counter"]
            assert float(final.best) == torch_state["best"]


class TraceCounter:
    """Counts calls. (A captured list would be part of the step's compile key, its contents
    changing with every append.)"""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


def poly_loss(params, xp=jnp):
    """A smooth loss whose float32 gradient torch and JAX compute alike."""
    return sum(xp.sum(0.5 * p * p + p * p * p / 30.0 - p) for p in params)


@pytest.mark.parametrize("kind, build", [
    ("sgd", lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=60)),
    ("adam", lambda m, o: m.CyclicLR(o, [0.01, 0.005], [0.1, 0.05], step_size_up=7)),
], ids=["SGD-OneCycleLR", "Adam-CyclicLR"])
def test_scheduled_training_compiles_the_step_once_and_follows_torch(torch_module,
                                                                      torch_lr_scheduler,
                                                                      kind, build):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(4).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    name, options = OPTIMIZERS[kind]
    tensors = [torch_module.tensor(x.copy(), requires_grad=True) for x in init]
    torch_opt = getattr(torch_module.optim, name)(
        [{"params": [tensors[0]]}, {"params": [tensors[1]], "lr": 0.05}], lr=0.1, foreach=False,
        **options)
    opt = getattr(optim, name)([{"params": jnp.asarray(init[0])},
                                {"params": jnp.asarray(init[1]), "lr": 0.05}], lr=0.1, **options)
    torch_sched, sched = build(torch_lr_scheduler, torch_opt), build(lr_scheduler, opt)

    traces = TraceCounter()
    lrs = []
    for _ in range(50):
        def closure(trees):
            traces()  # runs only while the step is traced (compiled)
            return poly_loss(trees)

        def torch_closure():
            torch_opt.zero_grad()
            loss = poly_loss(tensors, xp=torch_module)
            loss.backward()
            return loss

        lrs.append(opt.param_groups[0]["lr"])
        opt.step(closure)
        torch_opt.step(torch_closure)
        sched.step()
        torch_sched.step()
    assert all(a != b for a, b in zip(lrs, lrs[1:]))  # the lr changed at every step ...
    assert traces.n == 1  # ... and the step compiled once
    for x, y in zip(opt.params, tensors):
        np.testing.assert_allclose(np.asarray(x), y.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_scheduler_tracks_optimizer_steps_in_itself_not_on_the_optimizer():
    import jax.numpy as jnp
    import optim_jax

    opt = optim_jax.SGD({"w": jnp.ones(2)}, lr=0.1)
    scheduler = lr_scheduler.StepLR(opt, 3)
    assert not hasattr(opt, "_opt_called")
    assert len(opt._hooks["step_post"]) == 1
    opt.step(lambda p: jnp.sum(p["w"]))
    scheduler.step()
    assert not hasattr(opt, "_opt_called") and len(opt._hooks["step_post"]) == 0
