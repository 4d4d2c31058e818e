"""The frame scanner: what h2 does not bound, counted before h2 sees a byte.

It reads only the 9-byte frame headers (and skips payloads by count), so it costs a few
operations per frame, whatever the frame carries. See ``_protocol.py`` for what each budget
defends against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import h2.errors

__all__ = [
    "DEFAULT_LIMITS",
    "FLOOD_WINDOW",
    "MAX_HEADER_BLOCK_FRAMES",
    "FloodLimits",
    "FrameScanner",
]

_FRAME_HEADER: Final = 9
# Frame types (RFC 9113 section 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0, 1, 2, 3, 4
_PING, _WINDOW_UPDATE, _CONTINUATION = 6, 8, 9
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1

# The window over which resets and control frames are counted.
FLOOD_WINDOW: Final = 10.0
# HEADERS plus CONTINUATIONs in one header block: a real client needs one or two (16 KiB each
# by default); h2 itself allows 64.
MAX_HEADER_BLOCK_FRAMES: Final = 16


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Per-connection budgets over :data:`FLOOD_WINDOW` seconds; past one: ENHANCE_YOUR_CALM.

    The defaults are far above what browsers and API clients send (a page load resets a few
    streams, pings once or twice, sends a handful of SETTINGS and PRIORITY frames) and far below
    what the published attacks need (tens of thousands of frames per second).
    """

    #: RST_STREAMs received plus resets the client provoked.
    resets: int = 200
    #: PING, SETTINGS, PRIORITY and empty DATA frames without END_STREAM.
    control_frames: int = 1000
    #: WINDOW_UPDATE frames (a large download legitimately brings many).
    window_updates: int = 10_000


DEFAULT_LIMITS: Final = FloodLimits()


class FrameScanner:
    """Walks a connection's frame headers and keeps its flood counters.

    Args:
        clock: Seconds, monotonic (for the flood windows).
        limits: The flood budgets.
        max_header_block: Bytes allowed in one header block.
        skip: Bytes to pass over first (the client preface).
    """

    __slots__ = (
        "_block_bytes",
        "_block_frames",
        "_clock",
        "_counts",
        "_limits",
        "_max_header_block",
        "_partial",
        "_preface_left",
        "_skip",
        "_window_start",
    )

    def __init__(
        self,
        clock: Callable[[], float],
        limits: FloodLimits,
        max_header_block: int,
        *,
        skip: int = 0,
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._max_header_block = max_header_block
        # Preface bytes still to skip, a partial frame header, payload bytes of the current
        # frame still to skip, and the header block being received.
        self._preface_left = skip
        self._partial = b""
        self._skip = 0
        self._block_bytes = 0
        self._block_frames = 0
        self._window_start = clock()
        # Flood counters over the current window: "resets", "controls", "window_updates".
        self._counts: dict[str, int] = {}

    def scan(self, data: bytes) -> tuple[int, str] | None:
        """Walk the frame headers in ``data``; an error code and reason to end the connection,
        or ``None``."""
        view = memoryview(data)
        position = 0
        if self._preface_left:
            taken = min(self._preface_left, len(view))
            self._preface_left -= taken
            position = taken
        end = len(view)
        while position < end:
            if self._skip:
                taken = min(self._skip, end - position)
                self._skip -= taken
                position += taken
                continue
            need = _FRAME_HEADER - len(self._partial)
            piece = bytes(view[position : position + need])
            position += len(piece)
            if len(piece) < need:
                self._partial += piece
                break
            header = self._partial + piece
            self._partial = b""
            length = int.from_bytes(header[0:3], "big")
            self._skip = length
            kind, flags = header[3], header[4]
            if kind == _SETTINGS and flags & _ACK and length:
                # Fixed: RFC 9113 section 6.5 makes this a FRAME_SIZE_ERROR (h2: PROTOCOL_ERROR).
                return h2.errors.ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload"
            verdict = self._check_frame(kind, flags, length)
            if verdict is not None:
                return h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, verdict
        return None

    def _check_frame(self, kind: int, flags: int, length: int) -> str | None:
        limits = self._limits
        if kind in (_HEADERS, _CONTINUATION):
            if kind == _HEADERS:
                self._block_bytes = 0
                self._block_frames = 0
            self._block_bytes += length
            self._block_frames += 1
            if self._block_bytes > self._max_header_block:
                return "header block too large"
            if self._block_frames > MAX_HEADER_BLOCK_FRAMES:
                return "too many CONTINUATION frames"
            return None
        if kind == _RST_STREAM:
            return "too many streams reset" if self.count("resets", 1, limits.resets) else None
        if kind == _WINDOW_UPDATE:
            flooded = self.count("window_updates", 1, limits.window_updates)
            return "WINDOW_UPDATE flood" if flooded else None
        control = (
            kind in (_PING, _PRIORITY)
            or (kind == _SETTINGS and not flags & _ACK)
            or (kind == _DATA and length == 0 and not flags & _END_STREAM)
        )
        if control and self.count("controls", 1, limits.control_frames):
            return "control frame flood"
        return None

    def count(self, counter: str, amount: int, budget: int) -> bool:
        """Add ``amount`` to a flood counter; whether its budget is exceeded."""
        now = self._clock()
        counts = self._counts
        if now - self._window_start >= FLOOD_WINDOW:
            self._window_start = now
            counts.clear()
        value = counts[counter] = counts.get(counter, 0) + amount
        return value > budget
