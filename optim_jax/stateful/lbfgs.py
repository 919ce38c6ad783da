"""torch.optim.LBFGS's class: one compiled call per ``step(closure)`` over :func:`optim_jax.lbfgs_step`."""

from __future__ import annotations

import warnings

from optim_jax.lbfgs import lbfgs, lbfgs_step
from optim_jax.stateful.optimizer import Optimizer


class LBFGS(Optimizer):
    """torch.optim.LBFGS over JAX pytrees: ``LBFGS(params, lr=1, max_iter=20, ...)``.

    Arguments as :func:`lbfgs`; ``params`` as :class:`optim_jax.Optimizer` takes them (a pytree
    or an nnx Module; one group only, torch's error otherwise). torch's ``foreach``, ``fused``,
    ``capturable`` and ``differentiable`` are accepted and ignored.
    ``step(closure, *args, **kwargs)`` runs torch's whole step, every evaluation of
    ``closure(params, *args, **kwargs)`` included, as one compiled loop and returns the loss at
    the start of the step. A non-finite loss or gradient stops the step before the move that
    produced it and warns. State, torch's names (:class:`LBFGSState`): each parameter's entry
    holds its own slice of ``d``, ``prev_flat_grad`` and the ring buffers ``old_dirs``,
    ``old_stps`` (``history_size`` rows of its shape), and the scalars ``t``, ``num_old``,
    ``head``, ``H_diag``, ``prev_loss``, ``n_iter``, ``func_evals``, ``nonfinite``; ``ro`` is
    under parameter 0, where torch keeps all of its state.
    """

    transform = staticmethod(lbfgs)
    static_args = ("max_iter", "max_eval", "history_size")
    max_groups = 1

    def _step(self, closure, args, kwargs):
        if closure is None:
            raise RuntimeError("LBFGS.step needs a closure: opt.step(closure, *args)")
        loss = super()._step(closure, args, kwargs)
        if bool(self._records[0].state.nonfinite):
            warnings.warn(
                "LBFGS: the closure returned a non-finite loss or gradient; the step stopped "
                "before that move, params hold the last finite point",
                RuntimeWarning,
                stacklevel=3,
            )
        return loss

    def _closure_program(self, objective, structures):
        """torch's whole step, every closure evaluation included, as the compiled body; the
        evaluations' changes to nnx variables other than params are not kept."""

        evaluate = objective.evaluate  # not the objective: a cached program must not keep its arrays

        def run(trees, states, vector, arrays, offsets):  # a tree group: no offsets
            options, _ = self._options.options_for(structures[0], vector, 0)
            loss, params, state = lbfgs_step(
                lambda p: evaluate([p], arrays)[0], trees[0], states[0], **options
            )
            return loss, {}, [params], [state]

        return run
