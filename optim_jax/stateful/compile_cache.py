"""The stateful optimizers' cache of jitted step programs: bounded, and loud when it churns.

A step program is cached under a key that holds everything that shapes it: the algorithm's
static options, the tree structures, and for ``step(closure)`` the closure's code and the
non-array values it captured. A closure that captures a Python number that changes every
iteration makes a new key every step: each one compiles (seconds on a large model) and, without
a bound, stays in memory. The cache keeps the most recently used programs only, and warns once
when one closure has needed more programs than a training loop normally does, naming the value
that changes (as ``torch.compile`` warns on recompiles).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Hashable, NamedTuple

import jax


class Named(NamedTuple):
    """A part of a cache key with a name for people: what a recompile warning points at."""

    name: str
    key: Any


def _difference(old: Any, new: Any, where: tuple[str, ...]) -> tuple[tuple[str, ...], Any, Any] | None:
    """The first place two keys differ, with the names of the :class:`Named` parts above it."""
    if old == new:
        return None
    if isinstance(old, Named) and isinstance(new, Named) and old.name == new.name:
        return _difference(old.key, new.key, (*where, old.name))
    if (
        isinstance(old, tuple) and isinstance(new, tuple) and type(old) is type(new)
        and len(old) == len(new)
    ):
        for a, b in zip(old, new):
            found = _difference(a, b, where)
            if found is not None:
                return found
    return where, old, new


def _shown(part: Any) -> str:
    if isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], type):
        return repr(part[1])  # a static value's key: (type, value)
    return type(part).__name__ if hasattr(part, "__code__") else repr(part)[:80]


def describe_change(old: Any, new: Any) -> str:
    """Names the first part of ``new`` that differs from ``old``, e.g. ``captured 'scale': 0.1
    -> 0.2``."""
    found = _difference(old, new, ())
    if found is None:
        return "nothing"
    where, a, b = found
    return f"{' / '.join(where) or 'the program key'}: {_shown(a)} -> {_shown(b)}"


class _Hashed:
    """A key hashed once: a lookup hashes it twice (``get``, ``move_to_end``), and a key that
    holds an nnx module's graph costs tens of microseconds to hash."""

    __slots__ = ("key", "hash")

    def __init__(self, key: Hashable):
        self.key, self.hash = key, hash(key)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Hashed) and self.hash == other.hash and self.key == other.key


class CompileCache:
    """Jitted programs by key, least recently used dropped past ``capacity``.

    Args:
      capacity: programs kept; one per distinct key a training loop alternates between is
        plenty (train and eval closures, a few group layouts).
      warn_after: distinct keys one ``family`` (a closure's code) may produce before the cache
        warns, once, naming what changed between the last two.
    """

    def __init__(self, capacity: int = 32, warn_after: int = 8):
        self.capacity, self.warn_after = capacity, warn_after
        self._programs: OrderedDict[_Hashed, Callable] = OrderedDict()
        self._families: dict[Hashable, tuple[int, Any]] = {}  # family -> (keys seen, last key)
        self._warned = False

    def __len__(self) -> int:
        return len(self._programs)

    def get(
        self, key: Hashable, fn: Callable, donate: tuple[int, ...], family: Hashable = None
    ) -> Callable:
        """The program for ``key``, jitting ``fn`` (donating ``donate``) on a miss."""
        program = self.find(key)
        if program is not None:
            return program
        self._note_miss(key, family)
        program = self._programs[_Hashed(key)] = jax.jit(fn, donate_argnums=donate)
        if len(self._programs) > self.capacity:
            self._programs.popitem(last=False)
        return program

    def find(self, key: Hashable) -> Callable | None:
        """The program cached for ``key`` (now the most recently used), or ``None``."""
        hashed = _Hashed(key)
        program = self._programs.get(hashed)
        if program is not None:
            self._programs.move_to_end(hashed)
        return program

    def _note_miss(self, key: Hashable, family: Hashable) -> None:
        if family is None:
            return
        count, last = self._families.get(family, (0, None))
        self._families[family] = (count + 1, key)
        if count + 1 > self.warn_after and not self._warned:
            self._warned = True
            warnings.warn(
                f"optim_jax: this step has been compiled for {count + 1} different programs of "
                f"one closure; what changed since the last: {describe_change(last, key)}. A "
                "Python number or object a closure captures is part of the program: pass "
                "values that change every step as arrays (jnp.asarray) or as explicit step "
                "arguments, which are traced.",
                RuntimeWarning,
                stacklevel=4,
            )

    def clear(self) -> None:
        self._programs.clear()
        self._families.clear()
