"""Adagrad: torch's option sets (common_optimizers.optim_inputs_func_adagrad) and harder ones."""

from optim_jax.adagrad import adagrad

ALGORITHMS = {
    "adagrad": (
        adagrad,
        "Adagrad",
        [
            {},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "maximize": True},
            {"lr": 0.1},
            {"initial_accumulator_value": 0.1, "weight_decay": 0.1},
            {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1},
            {"lr": 0.001},
            {"lr": 0.5, "eps": 1e-3, "lr_decay": 0.05, "initial_accumulator_value": 0.5},
            {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.2, "initial_accumulator_value": 0.2,
             "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "adagrad": (
        {"lr": 0.05, "lr_decay": 0.01},
        {"lr": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.3, "eps": 1e-6},
    ),
}

VALIDATION = [
    (adagrad, {"lr": -0.1}, "Invalid learning rate: -0.1"),
    (adagrad, {"lr": 1e-2, "lr_decay": -0.5}, "Invalid lr_decay value: -0.5"),
    (adagrad, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    (adagrad, {"initial_accumulator_value": -0.1},
     "Invalid initial_accumulator_value value: -0.1"),
    (adagrad, {"eps": -1e-10}, "Invalid epsilon value: -1e-10"),
]
