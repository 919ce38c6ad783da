"""``optim_jax.swa_utils``: torch.optim.swa_utils' names, under torch's module path.

They live in :mod:`optim_jax.stateful.swa_utils`; this module is their public address.
"""

from optim_jax.stateful.swa_utils import *  # noqa: F401,F403
from optim_jax.stateful.swa_utils import __all__  # noqa: F401
