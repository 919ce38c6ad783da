"""Adamax: torch's option sets (common_optimizers.optim_inputs_func_adamax) and harder ones."""

from optim_jax.adamax import adamax

ALGORITHMS = {
    "adamax": (
        adamax,
        "Adamax",
        [
            {},
            {"lr": 0.1},
            {"weight_decay": 0.1},
            {"maximize": True},
            {"weight_decay": 0.1, "maximize": True},
            {"lr": 0.001, "weight_decay": 0.9},
            {"lr": 0.05, "betas": (0.0, 0.5), "eps": 1e-3},
            {"lr": 0.05, "betas": (0.5, 0.99), "weight_decay": 0.3, "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "adamax": ({"lr": 1e-2, "betas": (0.8, 0.99)}, {"lr": 0.05, "weight_decay": 0.1, "eps": 1e-4}),
}

VALIDATION = [
    (adamax, {"lr": -2e-3}, "Invalid learning rate: -0.002"),
    (adamax, {"eps": -1.0}, "Invalid epsilon value: -1.0"),
    (adamax, {"lr": 1e-2, "betas": (0.0, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    (adamax, {"betas": (-0.1, 0.9)}, "Invalid beta parameter at index 0: -0.1"),
    (adamax, {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
]
