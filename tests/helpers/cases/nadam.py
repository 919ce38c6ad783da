"""NAdam: torch's option sets (common_optimizers.optim_inputs_func_nadam) and harder ones."""

from optim_jax.nadam import nadam

ALGORITHMS = {
    "nadam": (
        nadam,
        "NAdam",
        [
            {},
            {"lr": 1e-3},
            {"momentum_decay": 6e-3},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "momentum_decay": 6e-3},
            {"weight_decay": 0.1, "momentum_decay": 6e-3, "decoupled_weight_decay": True},
            {"weight_decay": 0.1, "maximize": True},
            {"lr": 0.05, "betas": (0.0, 0.5), "eps": 1e-6, "momentum_decay": 0.0},
            {"lr": 0.05, "betas": (0.99, 0.9), "momentum_decay": 0.5, "weight_decay": 0.3,
             "decoupled_weight_decay": True, "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "nadam": (
        {"lr": 1e-2, "betas": (0.8, 0.99)},
        {"lr": 0.03, "weight_decay": 0.1, "momentum_decay": 0.01, "decoupled_weight_decay": True},
    ),
}

VALIDATION = [
    (nadam, {"lr": -2e-3}, "Invalid learning rate: -0.002"),
    (nadam, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    (nadam, {"lr": 1e-2, "betas": (1.0, 0.0)}, "Invalid beta parameter at index 0: 1.0"),
    (nadam, {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
    (nadam, {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    (nadam, {"lr": 1e-2, "momentum_decay": -0.2}, "Invalid momentum_decay value: -0.2"),
]
