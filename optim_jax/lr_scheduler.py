"""``optim_jax.lr_scheduler``: torch.optim.lr_scheduler's classes, under torch's module path.

They live in :mod:`optim_jax.stateful.lr_scheduler`; this module is their public address, so
``from optim_jax.lr_scheduler import OneCycleLR`` reads as torch's import does.
"""

from optim_jax.stateful.lr_scheduler import *  # noqa: F401,F403
from optim_jax.stateful.lr_scheduler import __all__  # noqa: F401
