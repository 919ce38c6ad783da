"""optim_jax's side of the parity tests: trajectories under one compiled step, the comparison
with torch's, and the torch-style class of an algorithm against torch's class."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import optim_jax as optim
from helpers.algorithms import ALGORITHMS
from helpers.trees import STEPS  # noqa: F401  (re-exported: the tests' step count)

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def committed(tree):
    """``tree``'s arrays committed to the default device (other leaves as they are).

    A jitted step's outputs are committed; inputs that are not make a different signature, so
    the second step would compile the program again. Committed from the start, it compiles once.
    """
    device = jax.devices()[0]

    def commit(x):
        if isinstance(x, jax.core.Tracer) or not isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return x
        return jax.device_put(x, device)

    return jax.tree.map(commit, tree)


def jax_trajectory(tx, params, grads_per_step):
    """Params after each step of ``tx`` (``update`` then ``apply_updates``, jitted)."""
    params = committed(params)
    state = committed(tx.init(params))

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    trajectory = []
    for grads in grads_per_step:
        params, state = step(params, state, grads)
        trajectory.append(params)
    return trajectory


def worst_error(ours, reference):
    """The largest |a - b| / |b| over all steps and leaves."""
    return max(
        float(np.max(np.abs(np.asarray(a) - b) / np.maximum(np.abs(b), 1e-30), initial=0))
        for x, y in zip(ours, reference)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


def assert_same_trajectory(ours, reference, dtype, tolerance=None):
    """Same dtypes, and values within ``TOLERANCE[dtype]`` after every step."""
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


def stateful_class(name):
    """The CapWords class of the algorithm (torch's name, ``optim_jax.SGD``)."""
    return getattr(optim, ALGORITHMS[name][1])


def torch_optimizer(torch, name, tensors, options):
    """torch's class of the algorithm ``name``, single-tensor (``foreach=False``)."""
    return getattr(torch.optim, ALGORITHMS[name][1])(tensors, **options, foreach=False)


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


def round_trip_continues_exactly(make, split, params, grads):
    """3 steps, save (msgpack), load into a twin stepped differently (whose state of the same
    structure the load overwrites) and given the params of the save, 3 more steps: the two
    optimizers' params are equal, bit for bit."""
    def step(opt, g):
        opt.grad = list(split(g))
        opt.step()

    original, fresh = make(params), make(params)
    for g in grads[:3]:
        step(original, g)
    step(fresh, grads[5])
    saved = flax.serialization.to_bytes(original.state_dict())
    for group, source in zip(fresh.param_groups, original.param_groups):
        group["params"] = jax.tree.map(jnp.copy, source["params"])
    fresh.load_state_dict(flax.serialization.msgpack_restore(saved))
    for g in grads[3:]:
        step(original, g), step(fresh, g)
    for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
