"""The table every parametrised test walks: each algorithm's two names and the option sets
torch's own tests use (torch/testing/_internal/common_optimizers.py), plus a few harder ones.

Algorithms beyond the three below add themselves by a module ``helpers/cases/<name>.py``
defining ``ALGORITHMS`` (same layout) and ``GROUP_OPTIONS`` (two option dicts for the stateful
class's two param groups: the second overriding the first's defaults) and, optionally,
``VALIDATION`` (``(factory, options, torch's ValueError message)`` triples)."""

import importlib
import pathlib

import optim_jax as optim

# name -> (pure factory, torch.optim class name, option sets)
ALGORITHMS = {
    "sgd": (
        optim.sgd,
        "SGD",
        [
            {},
            {"lr": 1e-2},
            {"weight_decay": 0.5},
            {"momentum": 0.9},
            {"weight_decay": 0.1, "maximize": True},
            {"momentum": 0.9, "dampening": 0.5},
            {"momentum": 0.9, "weight_decay": 0.1},
            {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True},
            {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.2, "maximize": True},
        ],
    ),
    "adam": (
        optim.adam,
        "Adam",
        [
            {},
            {"lr": 0.01},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "maximize": True},
            {"weight_decay": 0.1, "amsgrad": True},
            {"lr": 0.05, "amsgrad": True, "maximize": True},
            {"lr": 0.05, "betas": (0.0, 0.99), "eps": 1e-6},
            {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True},
        ],
    ),
    "adamw": (
        optim.adamw,
        "AdamW",
        [
            {},
            {"lr": 0.01},
            {"weight_decay": 0.1, "maximize": True},
            {"weight_decay": 0.1, "amsgrad": True},
            {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.0},
            {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True, "maximize": True},
        ],
    ),
}


# name -> (options of group 0 = constructor defaults, overrides for group 1)
GROUP_OPTIONS = {
    "sgd": ({"lr": 1e-2, "momentum": 0.9}, {"lr": 0.05, "nesterov": True, "weight_decay": 0.1}),
    "adam": ({"lr": 1e-2, "amsgrad": True}, {"lr": 0.03, "weight_decay": 0.1}),
    "adamw": ({"lr": 1e-2, "betas": (0.8, 0.99)}, {"weight_decay": 0.3}),
}

# (factory, options, torch's exact ValueError message)
VALIDATION = []

for _path in sorted((pathlib.Path(__file__).parent / "cases").glob("[!_]*.py")):
    _module = importlib.import_module(f"helpers.cases.{_path.stem}")
    ALGORITHMS.update(_module.ALGORITHMS)
    GROUP_OPTIONS.update(_module.GROUP_OPTIONS)
    VALIDATION.extend(getattr(_module, "VALIDATION", []))


# The option set the property tests use: these, else each algorithm's last (hardest) one.
RICH_OPTIONS = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    "adam": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    "adamw": {"lr": 0.01, "amsgrad": True, "maximize": True},
}


def rich_options(name):
    """Options of ``name`` that switch most of its arithmetic on."""
    return RICH_OPTIONS.get(name, ALGORITHMS[name][2][-1])


def cases():
    """(algorithm name, options) for every option set, with readable ids."""
    import pytest

    return [
        pytest.param(name, options, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'default'}")
        for name, (_, _, option_sets) in ALGORITHMS.items()
        for options in option_sets
    ]
