"""Websocket stubs: scripted sends, expected messages with diffs, closes with a code, denials."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

import harness
from harness import HarnessError


def ws_url(srv: harness.HarnessServer, path: str) -> str:
    return srv.url_for(path).replace("http://", "ws://", 1)


def test_a_scripted_conversation() -> None:
    with harness.serving() as srv:
        chat = (
            srv.expect_websocket("/chat")
            .send("welcome")
            .expect_message("hello")
            .expect_json({"op": "subscribe"})
            .send_json({"subscribed": True})
            .send(b"\x00\x01")
            .close(4000, "bye")
        )
        with connect(ws_url(srv, "/chat")) as client:
            assert client.recv(timeout=10) == "welcome"
            client.send("hello")
            client.send(json.dumps({"op": "subscribe", "topic": "news"}))
            assert json.loads(client.recv(timeout=10)) == {"subscribed": True}
            assert client.recv(timeout=10) == b"\x00\x01"
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "bye")  # type: ignore[union-attr]
        [session] = chat.sessions
        assert session.received == ["hello", '{"op": "subscribe", "topic": "news"}']
        assert session.close_code == 4000


def test_an_unexpected_message_closes_with_1008_and_fails_with_the_difference() -> None:
    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect_websocket("/chat").expect_json({"op": "subscribe"}).send("never sent")
        with connect(ws_url(srv, "/chat")) as client:
            client.send(json.dumps({"op": "unsubscribe"}))
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(timeout=10)
        assert closed.value.rcvd.code == 1008  # type: ignore[union-attr]
    assert (
        "websocket #ws1 /chat: step 1, expect_message(<JSON containing {'op': 'subscribe'}>): "
        "$.op: expected 'subscribe', got 'unsubscribe'" in str(info.value)
    )


def test_a_client_leaving_before_the_script_ends_fails_the_check() -> None:
    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect_websocket("/chat").expect_message("one").expect_message("two")
        with connect(ws_url(srv, "/chat")) as client:
            client.send("one")
    # Whether the server saw the close before it stopped, the step is named.
    assert "websocket #ws1 /chat: the " in str(info.value)
    assert "step 2, expect_message('two')" in str(info.value)


def test_deny_refuses_the_handshake_and_unmatched_websockets_fail() -> None:
    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect_websocket("/private").deny(401)
        with pytest.raises(InvalidStatus) as denied:
            connect(ws_url(srv, "/private"))
        assert denied.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as unmatched:
            connect(ws_url(srv, "/elsewhere"))
        assert unmatched.value.response.status_code == 403
    assert "unmatched request: WEBSOCKET /elsewhere" in str(info.value)


def test_an_unused_websocket_expectation_fails_the_check() -> None:
    with (
        pytest.raises(
            HarnessError, match=r"unmet websocket expectation #ws1 /feed: connected 0 of 1"
        ),
        harness.serving() as srv,
    ):
        srv.expect_websocket("/feed").send("x")


@pytest.mark.parametrize(
    ("message", "after", "fragmented"),
    [
        ("a long goodbye, cut short", None, False),
        (b"\x00" * 70_000, 1_000, False),  # a 64-bit length in the header
        ("first fragment, never finished", 5, True),
    ],
    ids=["text-half", "binary-large", "fragmented"],
)
def test_drop_mid_message_is_an_abnormal_closure_after_the_complete_messages(
    message: str | bytes, after: int | None, fragmented: bool
) -> None:
    with harness.serving() as srv:
        feed = (
            srv.expect_websocket("/feed")
            .send("one")
            .send(b"two")
            .drop_mid_message(message, after=after, fragmented=fragmented)
        )
        with connect(ws_url(srv, "/feed")) as client:
            assert client.recv(timeout=10) == "one"
            assert client.recv(timeout=10) == b"two"
            with pytest.raises(ConnectionClosedError) as dropped:
                client.recv(timeout=10)
        # No close frame either way: the client reports 1006 (abnormal closure).
        assert (dropped.value.rcvd, dropped.value.sent) == (None, None)
        assert "no close frame received or sent" in str(dropped.value)
        if not fragmented:
            # The frame header announced more payload than came before the end of the stream.
            assert isinstance(dropped.value.__cause__, EOFError)
        [session] = feed.sessions
        assert session.sent == ["one", b"two"]
        assert session.close_code == 1006
        assert session.pending is None


def test_drop_mid_message_needs_part_of_the_message_left_unsent() -> None:
    route = harness.WebSocketRoute("/feed", times=None, name="#ws1")
    with pytest.raises(ValueError, match=r"after=3 must leave part of the 3-byte message"):
        route.drop_mid_message("abc", after=3)
    with pytest.raises(ValueError, match=r"after=-1 must leave part"):
        route.drop_mid_message(b"abc", after=-1)
    # A whole first fragment is still an unfinished message.
    route.drop_mid_message("abc", after=3, fragmented=True)
    assert route.describe() == "WEBSOCKET /feed: drop_mid_message('abc', after=3)"
