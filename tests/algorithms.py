"""The table every parametrised test walks: each algorithm's two names and the option sets
torch's own tests use (torch/testing/_internal/common_optimizers.py), plus a few harder ones."""

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


def cases():
    """(algorithm name, options) for every option set, with readable ids."""
    import pytest

    return [
        pytest.param(name, options, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'default'}")
        for name, (_, _, option_sets) in ALGORITHMS.items()
        for options in option_sets
    ]
