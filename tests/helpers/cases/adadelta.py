"""Adadelta: torch's option sets (common_optimizers.optim_inputs_func_adadelta) and harder ones."""

from optim_jax.adadelta import adadelta

ALGORITHMS = {
    "adadelta": (
        adadelta,
        "Adadelta",
        [
            {},
            {"lr": 0.01},
            {"weight_decay": 0.1},
            {"maximize": True},
            {"weight_decay": 0.1, "maximize": True},
            {"rho": 0.95, "weight_decay": 0.9},
            {"lr": 0.001},
            {"rho": 0.0, "eps": 1e-3},
            {"lr": 2.0, "rho": 0.5, "eps": 1e-4, "weight_decay": 0.2, "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "adadelta": ({"lr": 0.5, "rho": 0.8}, {"lr": 2.0, "eps": 1e-4, "weight_decay": 0.1}),
}

VALIDATION = [
    (adadelta, {"lr": -0.5}, "Invalid learning rate: -0.5"),
    (adadelta, {"lr": 1e-2, "rho": 1.1}, "Invalid rho value: 1.1"),
    (adadelta, {"rho": -0.1}, "Invalid rho value: -0.1"),
    (adadelta, {"eps": -1e-6}, "Invalid epsilon value: -1e-06"),
    (adadelta, {"weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
]
