"""torch.optim's hooks: per-optimizer step and state_dict hooks, and the global step hooks."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable

# One counter for every handle, as torch's: registering the same hook twice gives two handles,
# each removing its own registration.
_next_id = itertools.count()


class RemovableHandle:
    """Returned by the hook registrations; ``remove()`` unregisters that one registration."""

    def __init__(self, hooks: OrderedDict):
        self._hooks, self.id = hooks, next(_next_id)

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register(hooks: OrderedDict, hook: Callable, prepend: bool = False) -> RemovableHandle:
    """Adds ``hook`` to ``hooks`` (last, or first with ``prepend``) and returns its handle."""
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


_global_step_pre_hooks: OrderedDict = OrderedDict()
_global_step_post_hooks: OrderedDict = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
    """Registers a hook run before every optimizer's step, as torch's global one.

    Args:
      hook: called as ``hook(optimizer, args, kwargs)`` before the optimizer's own pre-hooks;
        it may return new ``(args, kwargs)``.

    Returns:
      A handle whose ``remove()`` unregisters it.
    """
    return register(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
    """Registers a hook run after every optimizer's step, as torch's global one.

    Args:
      hook: called as ``hook(optimizer, args, kwargs)`` before the optimizer's own post-hooks.

    Returns:
      A handle whose ``remove()`` unregisters it.
    """
    return register(_global_step_post_hooks, hook)


def step_pre_hooks(own: OrderedDict) -> list[Callable]:
    """The global step pre-hooks, then ``own``, as they stand now."""
    return [*_global_step_pre_hooks.values(), *own.values()]


def step_post_hooks(own: OrderedDict) -> list[Callable]:
    """The global step post-hooks, then ``own``, as they stand now."""
    return [*_global_step_post_hooks.values(), *own.values()]
