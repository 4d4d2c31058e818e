"""Smaller stand-ins for the parts of h2 and hpack that an idle HTTP/2 connection keeps.

An idle connection holds one h2 connection, and tracemalloc showed most of it in three places
that hold little: each setting's values in a ``collections.deque`` (14 of them, two settings
objects), the frame dispatch table (a dict of a dozen bound methods), and the HPACK decoder's
dynamic table (a deque, 624 bytes empty). Each stand-in here keeps the behaviour h2 and hpack
rely on (the calls they make are listed with each) in a fraction of the memory.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

import h2.exceptions
import h2.settings

__all__ = ["ClosedStreams", "CompactSettings", "Dispatch", "Entries"]


class CompactSettings(h2.settings.Settings):
    """h2's settings with plain values: a dict of the current values (shared with every other
    connection's equal one, and never changed in place), and the values sent or received but not
    yet acknowledged (usually none) apart.

    Same behaviour as h2's (its properties go through ``__getitem__``): a value set is pending
    until :meth:`acknowledge`, which applies the oldest pending value of each setting; a setting
    first created by a pending value reads as missing (``KeyError``) until then.
    """

    def __init__(self, client: bool = True, initial_values: dict[Any, int] | None = None) -> None:
        super().__init__(client=client, initial_values=initial_values)
        # The same attribute as h2's, holding the current values themselves.
        deques: dict[Any, Any] = self._settings
        self._settings: dict[Any, int | None] = _shared(  # type: ignore[assignment]
            {key: values[0] for key, values in deques.items()}
        )
        self._pending: dict[Any, list[int]] | None = None

    def acknowledge(self) -> dict[Any, h2.settings.ChangedSetting]:
        changed: dict[Any, h2.settings.ChangedSetting] = {}
        pending = self._pending
        if not pending:
            return changed
        current = dict(self._settings)  # the current dict may be shared: change a copy
        for key, values in list(pending.items()):
            old = current.get(key)
            new = values.pop(0)
            current[key] = new
            changed[key] = h2.settings.ChangedSetting(key, old, new)
            if not values:
                del pending[key]
        self._settings = _shared(current)
        if not pending:
            self._pending = None
        return changed

    def __getitem__(self, key: Any) -> int:
        value = self._settings[key]
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: int) -> None:
        invalid = h2.settings._validate_setting(key, value)
        if invalid:
            raise h2.exceptions.InvalidSettingsValueError(
                f"Setting {key} has invalid value {value}", error_code=invalid
            )
        if key not in self._settings:
            self._settings = _shared({**self._settings, key: None})
        if self._pending is None:
            self._pending = {}
        self._pending.setdefault(key, []).append(value)

    def __delitem__(self, key: Any) -> None:
        current = dict(self._settings)
        del current[key]
        self._settings = _shared(current)
        if self._pending is not None:
            self._pending.pop(key, None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CompactSettings):
            return self._settings == other._settings and self._pending == other._pending
        return NotImplemented

    __hash__ = h2.settings.Settings.__hash__


# The current-values dicts in use, one per distinct content: every connection's own settings
# are the same, and clients of one kind send the same ones, so most connections share both.
# Bounded (past it, a dict is simply not shared): a few dozen kinds of client at most.
_SHARED_MAX = 256
_shared_settings: dict[tuple[tuple[Any, int | None], ...], dict[Any, int | None]] = {}


def _shared(values: dict[Any, int | None]) -> dict[Any, int | None]:
    """The shared dict equal to ``values`` (never changed in place once shared)."""
    key = tuple(values.items())
    found = _shared_settings.get(key)
    if found is not None:
        return found
    if len(_shared_settings) < _SHARED_MAX:
        _shared_settings[key] = values
    return values


class Dispatch:
    """h2's frame dispatch table (``table[type(frame)](frame)``, its one use) without a dict of
    bound methods per connection: the functions are shared, bound on each look-up."""

    __slots__ = ("_functions", "_owner")

    def __init__(self, owner: object, table: dict[type, Callable[..., Any]]) -> None:
        self._owner = owner
        self._functions = _shared_functions(table)

    def __getitem__(self, kind: type) -> Callable[..., Any]:
        return types.MethodType(self._functions[kind], self._owner)


_functions_cache: dict[tuple[tuple[type, Callable[..., Any]], ...], dict[type, Any]] = {}


def _shared_functions(table: dict[type, Callable[..., Any]]) -> dict[type, Any]:
    """The functions behind a table of bound methods, one dict for every table alike."""
    functions = {kind: method.__func__ for kind, method in table.items()}  # type: ignore[attr-defined]
    key = tuple(functions.items())
    return _functions_cache.setdefault(key, functions)


class Entries(list[tuple[bytes, bytes]]):
    """hpack's dynamic table entries (it calls ``appendleft``, ``pop``, ``clear``, indexes and
    iterates) in a list: a few pointers instead of a 624-byte deque block. A table holds at
    most a few dozen entries (4 KiB of fields), so ``insert(0, ...)`` costs nothing to speak of.
    """

    __slots__ = ()

    def appendleft(self, entry: tuple[bytes, bytes]) -> None:
        self.insert(0, entry)


class ClosedStreams(dict[int, Any]):
    """h2's record of recently closed streams (``SizeLimitDict``, an ``OrderedDict`` of about
    430 bytes even empty) in a plain dict: once ``limit`` is passed, the oldest entries go, an
    eighth of the limit at once. h2 sets items, tests ``in`` and reads them back; nothing else.

    Fixed (review): dropping the first key one at a time made a dict a slow FIFO: every
    ``next(iter(...))`` scans the slots that deletions left at the front, so past h2's limit
    (65536 streams on one connection, a proxy's long-lived connection) each closed stream cost
    10-60 us instead of about 1. Rebuilding the dict once per eighth costs a few copies per
    entry.
    """

    __slots__ = ("_limit",)

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self._limit = limit

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        limit = self._limit
        if limit is not None and len(self) > limit:
            kept = list(self.items())[len(self) - limit + limit // 8 :]
            self.clear()
            self.update(kept)
