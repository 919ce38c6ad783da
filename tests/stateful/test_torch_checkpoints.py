"""torch checkpoints move both ways: torch's optimizer state_dict (tensors as arrays) loads into
optim_jax and continues as torch does, and optim_jax's (arrays as tensors) loads into torch."""

import inspect

import jax
import numpy as np
import pytest

import optim_jax as optim

# (optim_jax class, torch class name, options, param shapes): every algorithm that keeps state.
MATRICES = [(4, 3), (3, 3)]
SHAPES = [(4, 3), (5,), (2, 2)]
CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}, SHAPES),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "nesterov": False}, SHAPES),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}, SHAPES),
    ("AdamW", {"lr": 0.05}, SHAPES),
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.1}, SHAPES),
    ("Adafactor", {"lr": 0.05}, SHAPES),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.01}, SHAPES),
    ("Adamax", {"lr": 0.05}, SHAPES),
    ("ASGD", {"lr": 0.05, "t0": 2.0}, SHAPES),
    ("NAdam", {"lr": 0.05}, SHAPES),
    ("RAdam", {"lr": 0.05}, SHAPES),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}, SHAPES),
    ("Rprop", {"lr": 0.05}, SHAPES),
    ("Muon", {"lr": 0.05}, MATRICES),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def to_numpy(value):
    """A torch state_dict with every tensor as a NumPy array (what a user converts)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_numpy(v) for v in value]
    return value


def to_torch(value):
    """optim_jax's state_dict with every array as a tensor."""
    import torch

    if isinstance(value, (jax.Array, np.ndarray)):
        return torch.tensor(np.array(value))
    if isinstance(value, dict):
        return {k: to_torch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_torch(v) for v in value]
    return value


def torch_stepper(torch, name, options, params):
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    cls = getattr(torch.optim, name)
    single_tensor = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
    opt = cls(tensors, **options, **single_tensor)

    def step(grads):
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        opt.step()

    return opt, tensors, step


def jax_stepper(name, options, params):
    opt = getattr(optim, name)([jax.numpy.asarray(p) for p in params], **options)

    def step(grads):
        opt.grad = [jax.numpy.asarray(g) for g in grads]
        opt.step()

    return opt, step


def random_run(shapes, steps, seed):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("name, options, shapes", CASES, ids=IDS)
def test_torch_state_dict_loads_and_continues_like_torch(torch_module, x64, name, options, shapes):
    params, grads = random_run(shapes, 6, seed=1)
    torch_opt, tensors, torch_step = torch_stepper(torch_module, name, options, params)
    for g in grads[:3]:
        torch_step(g)
    saved = to_numpy(torch_opt.state_dict())
    opt, jax_step = jax_stepper(name, options, [t.detach().numpy() for t in tensors])
    opt.load_state_dict(saved)
    for g in grads[3:]:
        torch_step(g)
        jax_step(g)
    for ours, theirs in zip(opt.params, tensors):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, options, shapes", CASES, ids=IDS)
def test_optim_jax_state_dict_loads_into_torch_and_continues(torch_module, x64, name, options, shapes):
    """torch continues from optim_jax's dict exactly as from its own saved at the same point.

    (The reference reloads torch's own dict: torch's load casts state to the params' dtype,
    NAdam's float32 ``mu_product`` included, which nudges its continuation by ~1e-10.)
    """
    params, grads = random_run(shapes, 6, seed=2)
    opt, jax_step = jax_stepper(name, options, params)
    reference, _, reference_step = torch_stepper(torch_module, name, options, params)
    for g in grads[:3]:
        jax_step(g)
        reference_step(g)
    runs = []
    for saved in (to_torch(opt.state_dict()), reference.state_dict()):
        torch_opt, tensors, torch_step = torch_stepper(
            torch_module, name, options, [np.asarray(p) for p in opt.params]
        )
        torch_opt.load_state_dict(saved)
        for g in grads[3:]:
            torch_step(g)
        runs.append([t.detach().numpy() for t in tensors])
    for g in grads[3:]:
        jax_step(g)
    for from_ours, from_torch, ours in zip(*runs, opt.params):
        np.testing.assert_allclose(from_ours, from_torch, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours, from_torch, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, options", [("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
                                           ("Adam", {"lr": 0.1})])
def test_torch_dict_saved_before_any_step_restarts_fresh(torch_module, x64, name, options):
    """torch lists no state before the first step: every parameter then starts fresh."""
    params, grads = random_run(SHAPES, 3, seed=3)
    torch_opt, tensors, torch_step = torch_stepper(torch_module, name, options, params)
    opt, jax_step = jax_stepper(name, options, params)
    opt.load_state_dict(to_numpy(torch_opt.state_dict()))
    for g in grads:
        torch_step(g)
        jax_step(g)
    for ours, theirs in zip(opt.params, tensors):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_parameter_without_state_entry_loads_fresh_like_torch(torch_module, x64):
    """A parameter that never had a gradient has no entry in torch's dict; it starts fresh."""
    params, grads = random_run(SHAPES, 4, seed=4)
    options = {"lr": 0.1, "momentum": 0.9}
    torch_opt, tensors, torch_step = torch_stepper(torch_module, "SGD", options, params)
    tensors[1].grad = None
    for t, g in zip([tensors[0], tensors[2]], [grads[0][0], grads[0][2]]):
        t.grad = torch_module.tensor(g)
    torch_opt.step()
    saved = to_numpy(torch_opt.state_dict())
    assert 1 not in saved["state"]
    opt, jax_step = jax_stepper("SGD", options, [t.detach().numpy() for t in tensors])
    with pytest.warns(RuntimeWarning, match=r"no entry for parameters \[1\]"):
        opt.load_state_dict(saved)  # exact for SGD without dampening; Adam's count would differ
    for g in grads[1:]:
        torch_step(g)
        jax_step(g)
    for ours, theirs in zip(opt.params, tensors):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
