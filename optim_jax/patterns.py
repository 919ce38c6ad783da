"""Param groups by name pattern: "no weight decay on biases and norms" in one line.

A leaf's *name* is its key path written with dots, ``jax.tree_util.keystr(path, simple=True,
separator='.')``: ``'encoder.layers.0.bias'`` (for an nnx Module's state, the path to the
variable, without nnx's trailing ``.value``). Patterns are regular expressions searched in
the name (``re.search``: anchor with ``^``/``$``); the first pattern that matches a leaf wins,
and leaves no pattern matches form the default group. The pure face gets labels for
:func:`optim_jax.partition`; the torch-style face gets param groups from
:func:`optim_jax.groups_by_pattern`.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable

import jax

from optim_jax.base import PyTree

DEFAULT = "default"


def leaf_names(params: PyTree) -> list[str]:
    """Every leaf's dotted key path, in leaf order: what patterns and ``param_names`` read.

    Args:
      params: a pytree, or an nnx Module's state (an ``nnx.Variable`` counts as a leaf).

    Returns:
      The names, e.g. ``['encoder.bias', 'encoder.kernel', 'head.0']``.
    """
    nnx = sys.modules.get("flax.nnx")
    is_variable = None if nnx is None else (lambda x: isinstance(x, nnx.Variable))
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]
    return [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in flat]


def pattern_labels(params: PyTree, patterns: Iterable[str], default: str = DEFAULT) -> PyTree:
    """Each leaf labelled by the first pattern that matches its name, or ``default``.

    Args:
      params: the parameter pytree (or an nnx Module's ``nnx.state``).
      patterns: regular expressions, in priority order.
      default: the label of the leaves no pattern matches.

    Returns:
      A pytree of labels with ``params``' structure, for :func:`optim_jax.partition`, e.g.
      ``partition({'no_decay': adamw(wd=0.0), 'default': adamw(wd=0.1)}, labels)`` after
      ``pattern_labels(params, {'no_decay': r'(bias|scale)$'}.values())`` (or label by the
      patterns themselves, as this returns them).

    Raises:
      ValueError: naming every pattern that matches no leaf (a typo would otherwise silently
        leave its parameters in the default group).
    """
    patterns = list(patterns)
    compiled = [re.compile(p) for p in patterns]
    names = leaf_names(params)
    labels = [next((p for p, c in zip(patterns, compiled) if c.search(n)), default) for n in names]
    unused = [p for p in patterns if p not in labels]
    if unused:
        raise ValueError(
            f"patterns {unused} match no parameter; the names are {names[:8]}"
            f"{' ...' if len(names) > 8 else ''}"
        )
    nnx = sys.modules.get("flax.nnx")
    is_variable = None if nnx is None else (lambda x: isinstance(x, nnx.Variable))
    return jax.tree.structure(params, is_leaf=is_variable).unflatten(labels)
