"""An open-file cache for `StaticFiles`, after nginx's `open_file_cache`."""

# Theory of operation
# ===================
#
# A cold lookup of a file costs about a dozen system calls (resolving the path and checking it
# lies inside the root, then one lstat per precompressed sibling), and the decision recomputes
# the same ETag, Last-Modified and Content-Type every time. The cache keeps, per request path
# (after dot-segment removal, so "/a/../b" and "/b" share an entry), what that lookup found: the
# `StaticFile` (real paths, the stat identity of the file and of each precompressed sibling; for
# a directory URL, the `Directory` with its index file) and
# the plans decided for requests without preconditions or ranges that describe the file (a 200:
# these differ only by method and Accept-Encoding; an error follows Accept too, so it is never
# kept), whose headers hold the ETag, Last-Modified and Content-Type.
#
# An entry older than `valid` seconds is looked up again in full, with every safety check
# (`load_resource`): a file removed is then a 404, a symlink swapped in that leaves the root is
# refused, a new or removed precompressed sibling is seen. That makes one full lookup per path
# per interval (not one stat): the few extra system calls are spread over every request in the
# interval, and a revalidation can never be weaker than a cold lookup. If the lookup finds the
# same `StaticFile` (same identities), the entry and its plans are kept; otherwise replaced.
#
# Small files' bytes (up to `MAX_BODY_SIZE`) are kept as well, by real path with the
# `Representation` (real path and stat identity) they were read for, after `open_verified`
# checked that the open file has that identity; they are found only for that representation.
# They are served from memory, without any system call, only for a representation that a fresh
# entry names, so content is never older than the interval. A larger file is still opened for
# each request and checked against the identity (O_NOFOLLOW: a symlink swapped in over the real
# path fails the open), and a failed open drops the entry.
#
# `ready` is the three steps of a plain GET (fresh entry, plan kept, bytes held) in one call, for
# the app's fast path: it finds only what those steps would find, with the same LRU updates. A
# HEAD is answered the same way when the bytes of the file its head describes are held: they
# were read from an open file checked against the identity, so the head needs no open of its
# own (a larger file's HEAD still opens it, as a GET does).
#
# Both parts are LRU-bounded: entries in number, bodies in number and in total bytes.

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ._paths import Directory, Representation, Resource
from ._plan import EmptyBody, ResponsePlan, WholeFile

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_VALID",
    "MAX_BODY_SIZE",
    "FileCache",
    "PlanKey",
]

#: Seconds an entry is trusted without a lookup, as nginx's `open_file_cache_valid` default
#: (60 s there; 1 s here so that a deploy is visible at once, while the lookup is still paid
#: only once per second per path, not per request).
DEFAULT_VALID = 1.0

#: Paths remembered. An entry without its body is a few hundred bytes (paths, identities, up to
#: `MAX_PLANS` plans of about a dozen short headers), so 4096 is a few MiB at most, and covers
#: the hot files of any site; nginx needs `max=` to be given, commonly 1000 to 10000.
DEFAULT_MAX_ENTRIES = 4096

#: Total bytes of small-file bodies kept in memory: 16 MiB per process covers a site's hot
#: assets (icons, small scripts and styles, JSON) without being noticed next to the runtime.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

#: Files up to this size have their bytes kept: the size the sender reads in one pread and
#: sends as one message anyway; anything larger is streamed or handed to pathsend.
MAX_BODY_SIZE = 64 * 1024

#: Plans kept per entry: one per (method, Accept-Encoding value) pair seen. Clients send a
#: handful of distinct Accept-Encoding values; more than this is a client varying it on purpose.
MAX_PLANS = 8

#: (method, Accept-Encoding value or None): what a plan without preconditions depends on.
PlanKey = tuple[str, bytes | None]


def _cacheable(found: Resource) -> bool:
    # A file, or a directory's index file; not a listing (it changes with every entry added).
    if isinstance(found, Directory):
        return found.index is not None and found.entries is None
    return True


@dataclass(slots=True)
class _Entry:
    file: Resource
    checked: float
    plans: dict[PlanKey, ResponsePlan] = field(default_factory=dict)


class FileCache:
    """What lookups found, per path, trusted for `valid` seconds; small files' bytes too.

    Args:
        valid: Seconds an entry is used without a new lookup (> 0).
        max_entries: Paths remembered, and small bodies kept, at most (LRU).
        max_body_bytes: Total bytes of small bodies kept at most (LRU).
        clock: Monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        valid: float = DEFAULT_VALID,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not valid > 0:
            raise ValueError(f"valid must be > 0, not {valid!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries!r}")
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, not {max_body_bytes!r}")
        self.valid = valid
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Real path -> (the representation the bytes were read for, the bytes): keyed by the
        # path (its hash is kept by the str), so a lookup hashes no identity; one per path.
        self._bodies: OrderedDict[str, tuple[Representation, bytes]] = OrderedDict()
        self._body_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def body_bytes(self) -> int:
        """Bytes of small bodies held now."""
        return self._body_bytes

    def lookup(
        self, key: str, load: Callable[[], Resource | None]
    ) -> tuple[Resource | None, dict[PlanKey, ResponsePlan] | None]:
        """What is at `key`: from the cache while fresh, else from `load()` (then cached).

        Returns:
            What was found (a `StaticFile`, or a `Directory` with its index file, is cached;
            anything else is not, and drops the entry), and the plans kept for it (None when
            it is not cached).
        """
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and now - entry.checked < self.valid:
            self._entries.move_to_end(key)
            return entry.file, entry.plans
        found = load()
        if found is None or not _cacheable(found):
            if entry is not None:
                del self._entries[key]
            return found, None
        if entry is not None and entry.file == found:
            entry.checked = now
            self._entries.move_to_end(key)
            return entry.file, entry.plans
        entry = _Entry(found, now)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return found, entry.plans

    def ready(self, key: str, plan_key: PlanKey) -> tuple[ResponsePlan, bytes] | None:
        """The plan kept for `plan_key` under a fresh entry for `key`, with its body: the
        file's bytes (a GET), or nothing when the plan has no body (a HEAD's 200).

        What `lookup`, the plan kept and `body` give a request without preconditions or ranges,
        in one step, when all three are there (the same LRU updates); None when any is
        missing (the entry is stale or absent, the plan not decided yet, the file's bytes not
        held, the plan neither a whole file nor a head describing one): then the request goes
        the general way.
        """
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry.checked >= self.valid:
            return None
        plan = entry.plans.get(plan_key)
        if plan is None:
            return None
        body_type = type(plan.body)
        if body_type is not WholeFile and body_type is not EmptyBody:
            return None
        file = plan.file
        if file is None or (held := self._bodies.get(file.path)) is None:
            return None
        if held[0] is not file and held[0] != file:
            return None
        self._entries.move_to_end(key)
        self._bodies.move_to_end(file.path)
        return plan, held[1] if body_type is WholeFile else b""

    def forget(self, key: str) -> None:
        """Drop the entry for `key` (its file could not be opened as it was found)."""
        self._entries.pop(key, None)

    def body(self, representation: Representation) -> bytes | None:
        """The bytes kept for exactly this file (path and stat identity), or None."""
        held = self._bodies.get(representation.path)
        if held is None or held[0] != representation:
            return None
        self._bodies.move_to_end(representation.path)
        return held[1]

    def keep_body(self, representation: Representation, data: bytes) -> None:
        """Keep `data`, read from an open file verified to be `representation`."""
        if len(data) > MAX_BODY_SIZE or len(data) > self.max_body_bytes:
            return
        old = self._bodies.pop(representation.path, None)
        if old is not None:  # the same file, or the one it replaced: either way, one per path
            self._body_bytes -= len(old[1])
        self._bodies[representation.path] = (representation, data)
        self._body_bytes += len(data)
        while self._body_bytes > self.max_body_bytes or len(self._bodies) > self.max_entries:
            _, (_, dropped) = self._bodies.popitem(last=False)
            self._body_bytes -= len(dropped)
