"""RAdam: torch's option sets (common_optimizers.optim_inputs_func_radam) and harder ones (large
steps after the rectification switches on, a beta2 for which it never does)."""

from optim_jax.radam import radam

ALGORITHMS = {
    "radam": (
        radam,
        "RAdam",
        [
            {},
            {"lr": 2e-3},
            {"eps": 1e-6},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
            {"weight_decay": 0.1, "maximize": True},
            {"lr": 0.05, "betas": (0.0, 0.5)},
            {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3},
            {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.3,
             "decoupled_weight_decay": True, "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "radam": (
        {"lr": 1e-2, "betas": (0.8, 0.99)},
        {"lr": 0.05, "betas": (0.9, 0.999), "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
}

VALIDATION = [
    (radam, {"lr": -1e-3}, "Invalid learning rate: -0.001"),
    (radam, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    (radam, {"lr": 1e-2, "betas": (1.0, 0.0)}, "Invalid beta parameter at index 0: 1.0"),
    (radam, {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    (radam, {"lr": 1e-2, "weight_decay": -1}, "Invalid weight_decay value: -1"),
]
