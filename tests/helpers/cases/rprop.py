"""Rprop: torch's option sets (optim_inputs_func_rprop) plus harder ones."""

from optim_jax.rprop import rprop

ALGORITHMS = {
    "rprop": (
        rprop,
        "Rprop",
        [
            {},
            {"lr": 2e-4},
            {"etas": (0.5, 1.5)},
            {"step_sizes": (2e-6, 100)},
            {"maximize": True},
            # harder: step sizes pinned at both bounds within the 25 steps
            {"lr": 0.3, "etas": (0.1, 3.0), "step_sizes": (1e-2, 0.5)},
            {"lr": 1e-3, "etas": (0.9, 1.01), "step_sizes": (1e-3, 2.0), "maximize": True},
        ],
    ),
}

GROUP_OPTIONS = {
    "rprop": (
        {"lr": 1e-2, "etas": (0.4, 1.3)},
        {"lr": 0.05, "step_sizes": (1e-3, 0.2), "maximize": True},
    ),
}

VALIDATION = [
    (rprop, {"lr": -0.01}, "Invalid learning rate: -0.01"),
    (rprop, {"lr": 1e-2, "etas": (1.0, 0.5)}, "Invalid eta values: 1.0, 0.5"),
    (rprop, {"etas": (0.0, 1.2)}, "Invalid eta values: 0.0, 1.2"),
    (rprop, {"etas": (0.5, 1.0)}, "Invalid eta values: 0.5, 1.0"),
]
