"""Every example of torch.optim's usage guide (shared/seed/torch-optim-doc.md), written with
optim_jax, trains exactly as the torch original does on the same weights and data."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optim_jax as optim

warnings.filterwarnings("ignore", category=DeprecationWarning, module="flax")


class Model(nnx.Module):
    """``model.base`` and ``model.classifier``, as the guide's per-layer example assumes."""

    def __init__(self, weights):
        rngs = nnx.Rngs(0)
        self.base = nnx.Linear(4, 8, rngs=rngs)
        self.classifier = nnx.Linear(8, 3, rngs=rngs)
        for layer, (w, b) in zip((self.base, self.classifier), weights):
            layer.kernel[...] = jnp.asarray(w.T)
            layer.bias[...] = jnp.asarray(b)

    def __call__(self, x):
        return self.classifier(jax.nn.relu(self.base(x)))


def loss_fn(output, target):
    return optax.softmax_cross_entropy_with_integer_labels(output, target).mean()


@pytest.fixture
def problem(torch_module):
    torch = torch_module
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.base, model.classifier = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
    model.forward = lambda x: model.classifier(torch.relu(model.base(x)))
    weights = [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy())
               for layer in (model.base, model.classifier)]
    rng = np.random.default_rng(0)
    dataset = [(rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16))
               for _ in range(5)]
    return torch, model, Model(weights), dataset


def torch_train(torch, model, optimizer, dataset, closure_style):
    for input, target in dataset:
        input, target = torch.from_numpy(input), torch.from_numpy(target)
        if closure_style:
            def closure():
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(input), target)
                loss.backward()
                return loss
            optimizer.step(closure)
        else:
            optimizer.zero_grad()
            output = model(input)
            loss = torch.nn.functional.cross_entropy(output, target)
            loss.backward()
            optimizer.step()


def assert_same_weights(torch_model, model, rtol=1e-5, atol=1e-6):
    for torch_layer, layer in ((torch_model.base, model.base),
                               (torch_model.classifier, model.classifier)):
        np.testing.assert_allclose(layer.kernel[...], torch_layer.weight.detach().numpy().T,
                                   rtol=rtol, atol=atol)
        np.testing.assert_allclose(layer.bias[...], torch_layer.bias.detach().numpy(),
                                   rtol=rtol, atol=atol)


def test_sgd_over_model_parameters_with_step(problem):
    torch, torch_model, model, dataset = problem
    torch_train(torch, torch_model,
                torch.optim.SGD(torch_model.parameters(), lr=0.01, momentum=0.9), dataset, False)

    optimizer = optim.SGD(model, lr=0.01, momentum=0.9)
    for input, target in dataset:
        optimizer.zero_grad()
        optimizer.backward(lambda model, input, target: loss_fn(model(input), target),
                           input, target)
        optimizer.step()
    assert_same_weights(torch_model, model)


def test_adam_over_a_list_of_variables(problem):
    torch, _, _, _ = problem
    var1, var2 = np.float32([1.0, -2.0, 3.0]), np.float32([[0.5, 0.25], [-1.0, 2.0]])
    torch_vars = [torch.tensor(v, requires_grad=True) for v in (var1, var2)]
    torch_optimizer = torch.optim.Adam(torch_vars, lr=0.0001)

    optimizer = optim.Adam([jnp.asarray(var1), jnp.asarray(var2)], lr=0.0001)
    for _ in range(5):
        torch_optimizer.zero_grad()
        (torch_vars[0].pow(2).sum() + torch_vars[1].sin().sum()).backward()
        torch_optimizer.step()
        optimizer.step(lambda vs: jnp.sum(vs[0] ** 2) + jnp.sum(jnp.sin(vs[1])))
    for ours, theirs in zip(optimizer.params, torch_vars):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6)


def test_per_parameter_options_with_step_closure(problem):
    torch, torch_model, model, dataset = problem
    torch_optimizer = torch.optim.SGD([
        {'params': torch_model.base.parameters()},
        {'params': torch_model.classifier.parameters(), 'lr': 1e-3}
    ], lr=1e-2, momentum=0.9)
    torch_train(torch, torch_model, torch_optimizer, dataset, True)

    optimizer = optim.SGD([
        {'params': model.base},
        {'params': model.classifier, 'lr': 1e-3}
    ], lr=1e-2, momentum=0.9)
    assert [(g["lr"], g["momentum"]) for g in optimizer.param_groups] == [(1e-2, 0.9),
                                                                          (1e-3, 0.9)]
    for input, target in dataset:
        def closure(groups):
            output = model(input)
            return loss_fn(output, target)
        optimizer.step(closure)
    assert_same_weights(torch_model, model)


def test_lbfgs_with_a_closure_that_reevaluates(problem):
    torch, torch_model, model, dataset = problem
    torch_train(torch, torch_model,
                torch.optim.LBFGS(torch_model.parameters(), history_size=5, max_iter=4),
                dataset, True)

    optimizer = optim.LBFGS(model, history_size=5, max_iter=4)
    for input, target in dataset:
        def closure(model):
            output = model(input)
            return loss_fn(output, target)
        optimizer.step(closure)
    # 20 float32 quasi-Newton iterations amplify the last-bit differences of the two backends'
    # matmuls (the float64 parity tests in test_lbfgs.py pin the algorithm to 1e-8).
    assert_same_weights(torch_model, model, rtol=1e-4, atol=5e-5)
