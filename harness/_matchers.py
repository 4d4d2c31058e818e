"""Matchers that explain themselves: JSON subsets and custom checks with a readable diff.

A :class:`Matcher` answers one question, :meth:`Matcher.difference`: why a value does not
match (``None`` when it does). Expectations use matchers as header values, inside
``json_contains=`` (any value of the subset), and as ``predicate=`` (given the whole recorded
request); the nearest-expectation report prints their differences. :func:`json_differences`
compares a JSON document with a subset of it, path by path (``$.user.roles[1]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Matcher", "json_differences", "match", "matches_regex"]


class Matcher:
    """A check with a reason. Subclass and implement :meth:`difference`, or use :func:`match`."""

    def difference(self, actual: Any) -> str | None:
        """Why ``actual`` does not match, for a human; ``None`` when it matches."""
        raise NotImplementedError

    def __call__(self, actual: Any) -> bool:
        return self.difference(actual) is None


class _Where(Matcher):
    def __init__(self, check: Callable[[Any], bool], description: str) -> None:
        self._check = check
        self._description = description

    def difference(self, actual: Any) -> str | None:
        try:
            if self._check(actual):
                return None
        except Exception as exc:
            return f"expected {self._description}, got {actual!r} (the check raised {exc!r})"
        return f"expected {self._description}, got {actual!r}"

    def __repr__(self) -> str:
        return f"<{self._description}>"


def match(check: Callable[[Any], bool], description: str) -> Matcher:
    """A matcher from a predicate and what it means: ``match(lambda v: v > 0, "a positive
    number")`` reports ``expected a positive number, got -1``."""
    return _Where(check, description)


def matches_regex(pattern: str | re.Pattern[str]) -> Matcher:
    """A string that ``pattern`` matches in full."""
    compiled = re.compile(pattern)
    return _Where(
        lambda value: isinstance(value, str) and compiled.fullmatch(value) is not None,
        f"a string matching /{compiled.pattern}/",
    )


def json_differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` does not contain ``expected``, one line per place.

    Objects match when every expected key is present with a matching value (other keys are
    ignored); arrays when they have the same length and match item by item; a
    :class:`Matcher` when its ``difference`` is ``None``; anything else when equal.
    """
    if isinstance(expected, Matcher):
        difference = expected.difference(actual)
        return [] if difference is None else [f"{path}: {difference}"]
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path}: expected an object, got {actual!r}"]
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{path}: missing key {key!r} (expected {value!r})")
            else:
                found.extend(json_differences(value, actual[key], f"{path}.{key}"))
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected an array, got {actual!r}"]
        if len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}: {actual!r}"]
        return [
            line
            for index, (want, got) in enumerate(zip(expected, actual, strict=True))
            for line in json_differences(want, got, f"{path}[{index}]")
        ]
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []
