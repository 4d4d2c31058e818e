"""The response side of :class:`~._protocol.ServerProtocol`: framing, closing, 100-continue.

A base class of ``ServerProtocol`` (which owns most of the state: its slots are declared
there; the response's framing and ``will_close`` are declared here) so that each half of the
HTTP/1.1 protocol reads on its own: what comes in (``_protocol.py``) and what
goes out (here). No I/O: every method returns the bytes to write.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Final

import h11

from .._http._events import RequestHead
from ._writers import (
    COMPLETE,
    LAST_CHUNK,
    NO_BODY,
    NOT_STARTED,
    UNTIL_CLOSE,
    BodyWriter,
    Fields,
    ResponseError,
    error_response,
    frame_response,
    render_fields,
)

__all__ = ["REQUEST_COMPLETE_STATES", "ResponseSide"]

# The client's states once its whole request has arrived (MIGHT_SWITCH_PROTOCOL: it asked for an
# Upgrade, which this server never grants).
REQUEST_COMPLETE_STATES: Final = (
    h11.DONE,
    h11.MIGHT_SWITCH_PROTOCOL,  # type: ignore[attr-defined]
    h11.MUST_CLOSE,
)


class _DateLines:
    """The ``Date`` header line of the last value a protocol's ``date()`` gave (the value is
    shared and changes once a second; two concatenations per response otherwise)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        # (value, line), replaced whole: a reader never pairs one value with another's line.
        # None until the first: no value a date() gives (b"" too) is taken for it.
        self.last: tuple[bytes | None, bytes] = (None, b"")


_date_lines: Final = _DateLines()


class ResponseSide:
    """What the server sends on one HTTP/1.1 connection (see ``ServerProtocol``)."""

    # The response's framing, and whether the connection ends after it (the other state is
    # ServerProtocol's, in its slots).
    __slots__ = ("_writer", "will_close")

    #: Whether the connection ends after the current response (set by the protocol; from
    #: outside, :meth:`close_after_response`). A plain attribute, as ``request_bodyless``: the
    #: connection reads both once per request, and on Python 3.11 a property read costs about
    #: six times an attribute's (it is not specialised).
    will_close: bool
    _writer: BodyWriter
    # Set by ServerProtocol.
    _conn: h11.Connection | None
    _date: Callable[[], bytes] | None
    _server: bytes | None
    _head_request: bool
    _client_http11: bool
    _client_closes: bool
    request_bodyless: bool
    trailers_accepted: bool
    head: RequestHead | None

    @property
    def waiting_for_100_continue(self) -> bool:
        """Whether the client sent ``Expect: 100-continue`` and waits for our go-ahead."""
        conn = self._conn
        return conn is not None and bool(conn.they_are_waiting_for_100_continue)

    def _has_request(self) -> bool:
        """Whether a request is under way (ServerProtocol knows, from its parser)."""
        raise NotImplementedError

    @property
    def request_complete(self) -> bool:
        """Whether the whole current request, body included, has been received."""
        if self.request_bodyless:
            return True
        conn = self._conn
        return conn is not None and conn.their_state in REQUEST_COMPLETE_STATES

    # -- sending -----------------------------------------------------------------------------

    def continue_response(self) -> bytes:
        """``100 Continue`` when the client waits for it and no response has started; else b"".

        Called when the app first reads the body: the interim response is sent lazily, so
        an app that answers without reading never invites the body.
        """
        conn = self._conn
        if conn is None or not conn.they_are_waiting_for_100_continue:
            return b""
        if self._writer is not NOT_STARTED:
            return b""
        return conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""

    def close_after_response(self) -> None:
        """Make the current response the connection's last (it says ``Connection: close``)."""
        self.will_close = True

    def send_response(
        self,
        status: object,
        headers: Fields,
        *,
        body_length: int | None = None,
        length_is_resource_size: bool = False,
    ) -> bytes:
        """The response head; body bytes follow through :meth:`send_data`.

        The framing is picked by :func:`~._writers.frame_response` (``body_length``: the whole
        body's length when known; ``length_is_resource_size``: a HEAD response carries it too).

        Raises:
            ResponseError: the status or headers are invalid.
        """
        return b"".join(
            self._head_lines(status, headers, body_length, length_is_resource_size, False)
        )

    def send_whole_response(
        self, status: object, headers: Fields, body: bytes
    ) -> tuple[bytes, int]:
        """A complete response whose body is ``body``: the bytes to write, and how many of
        them are body bytes (0 for HEAD, 204, 304).

        The same as :meth:`send_response` with ``body_length``, :meth:`send_data` and
        :meth:`send_end`, in one call (most responses are a single ``http.response.body``).

        Raises:
            ResponseError: the status or headers are invalid, or the app's Content-Length is
                not the body's length.
        """
        lines = self._head_lines(status, headers, len(body), False, True)
        if self._writer is COMPLETE:
            # Framed by its length, and that is the body's: head and body in one join.
            lines.append(body)
            return b"".join(lines), len(body)
        head = b"".join(lines)
        writer = self._writer
        sent = 0 if writer is NO_BODY else len(body)
        return head + writer.data(body) + self.send_end(), sent

    def _head_lines(
        self,
        status: object,
        headers: Fields,
        body_length: int | None,
        length_is_resource_size: bool,
        whole: bool,
    ) -> list[bytes]:
        """The lines of :meth:`send_response`'s head, the blank line last (``whole``: as
        :func:`~._writers.frame_response` has it)."""
        if self._writer is not NOT_STARTED:
            raise ResponseError("the response has already started")
        date = self._date
        date_line: bytes | None = None
        if date is not None:
            value = date()
            last = _date_lines.last
            if value is not last[0]:
                # The value changes once a second: its line is made once, for every connection.
                last = _date_lines.last = (value, b"date: " + value + b"\r\n")
            date_line = last[1]
        lines, writer, said_close = frame_response(
            status,
            headers,
            date_line,
            self._server,
            self._head_request,
            self._client_http11,
            body_length,
            length_is_resource_size,
            whole,
        )
        self._writer = writer
        if (
            said_close
            or writer is UNTIL_CLOSE
            or self._client_closes
            # (A parsed head says a request is under way without the call.)
            or (self.head is None and not self._has_request())
            # (request_bodyless first: a GET's request is complete, and properties cost a call.)
            or (
                not self.request_bodyless
                and not self.request_complete
                and self.waiting_for_100_continue
            )
        ):
            # The client asked to close, or it still holds back a body we never asked for.
            self.will_close = True
        if self.will_close and not said_close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return lines

    def send_data(self, data: bytes) -> bytes:
        """A piece of the response body, framed (for chunked responses) as needed.

        Raises:
            ResponseError: more bytes than the declared Content-Length, or no head yet.
        """
        return self._writer.data(data)

    def send_data_passthrough(self, data: Sized) -> list[object]:
        """Like :meth:`send_data` for a body piece that is not bytes (a file range for sendfile).

        ``data`` needs only ``len()``; it is returned in place among the framing bytes.
        """
        return self._writer.passthrough(data)

    def send_end(self, trailers: Fields = ()) -> bytes:
        """The end of the response body, with ``trailers`` as trailer fields where they can go
        (a chunked body, to a client that said ``TE: trailers``; elsewhere they are dropped).

        Raises:
            ResponseError: fewer bytes than the declared Content-Length were sent, or an
                invalid trailer field.
        """
        end = self._writer.end()
        if trailers and self.trailers_accepted and end == LAST_CHUNK:
            end = b"0\r\n" + render_fields(trailers) + b"\r\n"
        self._writer = COMPLETE
        return end

    def error_response(self, status: int, reason: str) -> bytes:
        """A complete error response that ends the connection (any state).

        Its body follows the refused request's ``Accept`` when its head arrived (``head``),
        and is plain text otherwise.
        """
        self.will_close = True
        self._writer = COMPLETE
        accept = None
        if self.head is not None:
            values = [value for name, value in self.head.headers if name == b"accept"]
            accept = b", ".join(values) if values else None
        return error_response(
            status,
            reason,
            accept=accept,
            head_only=self._head_request,
            date=self._date,
            server=None if self._server is None else self._server[8:-2],
        )

    @property
    def head_request(self) -> bool:
        """Whether the current request is a HEAD request."""
        return self._head_request

    @property
    def response_started(self) -> bool:
        """Whether the current response's head has been produced."""
        return self._writer is not NOT_STARTED

    @property
    def discards_body(self) -> bool:
        """Whether the current response must carry no body (HEAD, 204, 304)."""
        return self._writer is NO_BODY
