"""ASGI websockets: one session over an HTTP/1.1 upgrade or an HTTP/2 extended CONNECT."""

from ._session import WebSocketSession as WebSocketSession
from ._wire import FrameConnection as FrameConnection
from ._wire import PerMessageDeflateOnce as PerMessageDeflateOnce
from ._wire import WebSocketHandshakeError as WebSocketHandshakeError
from ._wire import WebSocketWire as WebSocketWire
