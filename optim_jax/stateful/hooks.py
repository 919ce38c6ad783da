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


_KINDS = ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
          "load_state_dict_pre", "load_state_dict_post")


def fresh_hooks() -> dict[str, OrderedDict]:
    """An optimizer's empty hook registries, one per kind (also what a copy starts with: torch
    drops hooks from copies too)."""
    return {kind: OrderedDict() for kind in _KINDS}


class HookRegistrations:
    """The optimizer's ``register_*_hook`` methods, over ``self._hooks`` (:func:`fresh_hooks`)."""

    _hooks: dict[str, OrderedDict]

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Registers a hook called before each step.

        Args:
          hook: called as ``hook(optimizer, args, kwargs)``; it may return new
            ``(args, kwargs)``.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["step_pre"], hook)

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """Registers a hook called after each step.

        Args:
          hook: called as ``hook(optimizer, args, kwargs)``.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["step_post"], hook)

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Registers a hook called before ``state_dict()`` builds the dict, as torch's.

        Args:
          hook: called as ``hook(optimizer)``.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["state_dict_pre"], hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Registers a hook called on the dict ``state_dict()`` built, as torch's.

        Args:
          hook: called as ``hook(optimizer, state_dict)``; a dict it returns replaces it.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["state_dict_post"], hook, prepend)

    def register_load_state_dict_pre_hook(
        self, hook: Callable, prepend: bool = False
    ) -> RemovableHandle:
        """Registers a hook called before ``load_state_dict`` reads the dict, as torch's.

        Args:
          hook: called as ``hook(optimizer, state_dict)``; a dict it returns is loaded instead.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["load_state_dict_pre"], hook, prepend)

    def register_load_state_dict_post_hook(
        self, hook: Callable, prepend: bool = False
    ) -> RemovableHandle:
        """Registers a hook called after ``load_state_dict`` has loaded, as torch's.

        Args:
          hook: called as ``hook(optimizer)``.
          prepend: run it before the hooks already registered instead of after them.

        Returns:
          A handle whose ``remove()`` unregisters it.
        """
        return register(self._hooks["load_state_dict_post"], hook, prepend)

    def _run_hooks(self, kind: str, *args: Any) -> Any:
        """Runs ``kind``'s hooks in order; the last non-``None`` result of a hook that may
        replace its argument (state_dict hooks) is returned, else ``None``."""
        result = None
        for hook in list(self._hooks[kind].values()):
            replaced = hook(*args) if result is None else hook(*args[:-1], result)
            result = replaced if replaced is not None else result
        return result
