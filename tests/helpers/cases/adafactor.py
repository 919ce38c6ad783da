"""Adafactor: torch's option sets (optim_inputs_func_adafactor) plus harder ones."""

from optim_jax.adafactor import adafactor

ALGORITHMS = {
    "adafactor": (
        adafactor,
        "Adafactor",
        [
            {},
            {"weight_decay": 0.1, "lr": 0.01},
            {"weight_decay": 0.1, "maximize": True},
            {"beta2_decay": -1.0},
            {"d": 1.5},
            # harder: explicit eps1 that binds, lr above 1/sqrt(t) for the first steps, no clipping
            {"lr": 0.5, "eps": (1e-2, 1e-1), "d": 1.0, "beta2_decay": -0.5},
            {"lr": 0.05, "eps": (1e-30, 1e-3), "d": 10.0, "weight_decay": 0.3, "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "adafactor": (
        {"lr": 1e-2, "beta2_decay": -0.7},
        {"lr": 0.3, "weight_decay": 0.2, "d": 1.2, "eps": (1e-4, 1e-2)},
    ),
}

VALIDATION = [
    (adafactor, {"lr": -0.01}, "Learning rate should be >= 0 but is: -0.01"),
    (adafactor, {"beta2_decay": 0.8}, "beta2_decay should be <= 0 but is: 0.8"),
    (adafactor, {"eps": (-1e-30, 1e-3)}, "epsilon1 should be >= 0 but is: -1e-30"),
    (adafactor, {"eps": (None, -1e-3)}, "epsilon2 should be >= 0 but is: -0.001"),
    (adafactor, {"d": 0.0}, "Clipping threshold d should be >= 1 but is: 0.0"),
    (adafactor, {"weight_decay": -0.1}, "weight_decay should be >= 0 but is: -0.1"),
]
