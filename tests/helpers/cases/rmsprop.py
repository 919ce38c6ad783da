"""RMSprop: torch's option sets (optim_inputs_func_rmsprop) plus harder ones."""

from optim_jax.rmsprop import rmsprop

ALGORITHMS = {
    "rmsprop": (
        rmsprop,
        "RMSprop",
        [
            {},
            {"lr": 1e-3},
            {"weight_decay": 0.1},
            {"maximize": True},
            {"weight_decay": 0.1, "centered": True},
            {"maximize": True, "weight_decay": 0.1},
            {"weight_decay": 0.1, "centered": True, "momentum": 0.1},
            {"weight_decay": 0.1, "centered": True, "momentum": 0.1, "maximize": True},
            # harder: heavy momentum, fast averaging (alpha < 0.5 takes lerp's other branch)
            {"lr": 0.05, "momentum": 0.9, "alpha": 0.3, "eps": 1e-3},
            {"lr": 0.03, "alpha": 0.2, "centered": True, "momentum": 0.5, "eps": 0.1},
        ],
    ),
}

GROUP_OPTIONS = {
    "rmsprop": (
        {"lr": 1e-2, "momentum": 0.9, "centered": True},
        {"lr": 0.03, "alpha": 0.9, "weight_decay": 0.1, "momentum": 0.0, "centered": False},
    ),
}

VALIDATION = [
    (rmsprop, {"lr": -0.01}, "Invalid learning rate: -0.01"),
    (rmsprop, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    (rmsprop, {"lr": 1e-2, "momentum": -1.0}, "Invalid momentum value: -1.0"),
    (rmsprop, {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    (rmsprop, {"alpha": -0.5}, "Invalid alpha value: -0.5"),
]
