"""Combinators: run transforms in sequence (:func:`chain`) or side by side over labelled parts of
a parameter tree (:func:`partition`, per-group hyperparameters in the pure world)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from optim_jax.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    with_extra_args_support,
)


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
    """Applies ``transforms`` in order, each to the previous one's output.

    Members may be optim_jax or optax transforms. Extra keyword arguments to ``update`` reach
    every member that accepts them. The algorithms here are chains of small blocks (see
    :func:`optim_jax.descent`), e.g. ``chain(optim_jax.scale_by_adam(), optim_jax.scale_by_learning_rate(1e-3))``
    is Adam without weight decay.

    Args:
      *transforms: the transforms, first applied first; each ``update`` receives the same
        ``params`` (the current parameters, not updated between members).

    Returns:
      A :class:`~optim_jax.GradientTransformationExtraArgs` whose state is the tuple of the
      members' states, in order.
    """
    members = tuple(with_extra_args_support(t) for t in transforms)

    def init(params):
        return tuple(t.init(params) for t in members)

    def update(updates, state, params=None, **extra_args):
        if len(state) != len(members):
            raise ValueError(
                f"chain: state has {len(state)} members, the chain has {len(members)}"
            )
        new_state = []
        for t, s in zip(members, state):
            updates, s = t.update(updates, s, params, **extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformationExtraArgs(init, update)


class PartitionState(NamedTuple):
    """The state of :func:`partition`: each label's transform's state, keyed by label.

    Attributes:
      inner_states: ``{label: state}``, each state built over the params with the other labels'
        leaves replaced by ``None``.
    """

    inner_states: dict


Labels = Any | Callable[[Params], Any]


def label_leaves(labels: Labels, tree: Any, is_leaf: Any = None) -> tuple[list, Any, list]:
    """``(leaves, treedef, label of each leaf)`` for ``tree``.

    ``labels`` is a pytree of labels with ``tree``'s structure or a prefix of it (a label on a
    subtree labels all its leaves), or a function ``tree -> labels``; ``is_leaf`` as
    ``jax.tree.flatten`` takes it.
    """
    label_tree = labels(tree) if callable(labels) else labels
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_leaf)
    try:
        full = jax.tree.map(
            lambda label, sub: jax.tree.map(lambda _: label, sub, is_leaf=is_leaf), label_tree, tree
        )
        return leaves, treedef, treedef.flatten_up_to(full)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"labels must have the params' structure {treedef} or a prefix of it: {e}"
        ) from None


def partition(
    transforms: Mapping[Hashable, GradientTransformation], labels: Labels
) -> GradientTransformationExtraArgs:
    """Applies ``transforms[label]`` to the leaves labelled ``label``.

    Args:
      transforms: one transform per label.
      labels: a pytree of labels with the params' structure, or a prefix of it (a label on a
        subtree labels all its leaves), or a function ``params -> labels``.

    Returns:
      A transform whose inner transforms each see the params tree with the leaves of other labels
      replaced by ``None`` (no leaves), so their states hold only their own leaves.
    """
    members = {label: with_extra_args_support(t) for label, t in transforms.items()}

    def split(tree):
        leaves, treedef, flat_labels = label_leaves(labels, tree)
        unknown = set(flat_labels) - set(members)
        if unknown:
            names = lambda labels: ", ".join(sorted(map(repr, labels)))  # noqa: E731
            raise ValueError(
                f"partition: labels {names(unknown)} have no transform; "
                f"transforms are given for {names(members)}"
            )
        return leaves, treedef, flat_labels

    def mask(leaves, treedef, flat_labels, label):
        return treedef.unflatten(
            [leaf if lab == label else None for leaf, lab in zip(leaves, flat_labels)]
        )

    def init(params):
        leaves, treedef, flat_labels = split(params)
        return PartitionState(
            {
                label: t.init(mask(leaves, treedef, flat_labels, label))
                for label, t in members.items()
            }
        )

    def update(updates, state, params=None, **extra_args):
        leaves, treedef, flat_labels = split(updates)
        param_leaves = None if params is None else treedef.flatten_up_to(params)
        merged = list(leaves)
        inner_states = {}
        for label, t in members.items():
            sub_params = (
                None if params is None else mask(param_leaves, treedef, flat_labels, label)
            )
            sub_updates, inner_states[label] = t.update(
                mask(leaves, treedef, flat_labels, label),
                state.inner_states[label],
                sub_params,
                **extra_args,
            )
            for i, u in enumerate(treedef.flatten_up_to(sub_updates)):
                if flat_labels[i] == label:
                    merged[i] = u
        return treedef.unflatten(merged), PartitionState(inner_states)

    return GradientTransformationExtraArgs(init, update)


def _as_real(x):
    if x is not None and jnp.iscomplexobj(x):
        return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return x


def _as_complex(x, like):
    if like is not None and jnp.iscomplexobj(like):
        return jax.lax.complex(x[..., 0], x[..., 1]).astype(jnp.result_type(like))
    return x


def view_as_real(transform: GradientTransformation) -> GradientTransformationExtraArgs:
    """Runs ``transform`` on complex leaves viewed as real pairs, as torch.optim does.

    A complex leaf of shape ``s`` is seen by ``transform`` as a real array of shape ``s + (2,)``
    (real and imaginary parts), so elementwise nonlinearities (Adam's square and square root)
    act on each part separately, exactly like torch's ``view_as_real``. Real leaves pass through
    untouched.

    Args:
      transform: the transform to run on the real views (its ``update`` may take extra
        keyword arguments; they are passed through).

    Returns:
      A :class:`~optim_jax.GradientTransformationExtraArgs` whose updates have the original
      leaves' shapes and dtypes and whose state is ``transform``'s over the real views.
    """
    inner = with_extra_args_support(transform)
    is_none = lambda x: x is None  # noqa: E731

    def init(params):
        return inner.init(jax.tree.map(_as_real, params, is_leaf=is_none))

    def update(updates, state, params=None, **extra_args):
        real_params = None if params is None else jax.tree.map(_as_real, params, is_leaf=is_none)
        real_updates, state = inner.update(
            jax.tree.map(_as_real, updates, is_leaf=is_none), state, real_params, **extra_args
        )
        return jax.tree.map(_as_complex, real_updates, updates, is_leaf=is_none), state

    return GradientTransformationExtraArgs(init, update)
