"""ASGD: torch's option sets (common_optimizers.optim_inputs_func_asgd) and harder ones in which
the averaging starts within the test's 25 steps."""

from optim_jax.asgd import asgd

ALGORITHMS = {
    "asgd": (
        asgd,
        "ASGD",
        [
            {},
            {"lambd": 0.1},
            {"lr": 0.02},
            {"t0": 100},
            {"maximize": True},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "maximize": True},
            {"lr": 0.05, "t0": 5},
            {"lr": 0.1, "lambd": 0.05, "alpha": 0.5, "t0": 0.0},
            {"lr": 0.05, "lambd": 0.01, "alpha": 1.0, "t0": 10, "weight_decay": 0.2,
             "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "asgd": ({"lr": 0.02, "t0": 3}, {"lr": 0.05, "lambd": 0.01, "weight_decay": 0.1, "t0": 12}),
}

VALIDATION = [
    (asgd, {"lr": -0.01}, "Invalid learning rate: -0.01"),
    (asgd, {"lr": 1e-2, "weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
]
