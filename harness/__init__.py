"""harness: real in-process trioserve servers for integration tests.

Stub servers with expectations and faults, your own ASGI app, or a static directory, on a real
socket (port 0), optionally over TLS with a throwaway trustme CA::

    with harness.serving() as srv:                       # any test: a thread of its own
        srv.expect("GET", "/v1/users/7").respond(200, json={"id": 7})
        assert requests.get(srv.url_for("/v1/users/7")).json() == {"id": 7}

    async with harness.open_server(app=my_app, tls=True) as srv:   # trio tests
        ...

Also: websocket stubs (``srv.expect_websocket``), TLS faults (``tls_fault=``), a forward-proxy
stub (:func:`proxy`), record and replay (:func:`recording`, :func:`replaying`), matchers
(:class:`Matcher`), and any trioserve setting as a keyword (``http2=False``, ``port=``...).

The pytest plugin (``harness._plugin``, registered as ``pytest11``) provides the fixtures.
"""

from ._cassette import recording as recording
from ._cassette import replaying as replaying
from ._faults import Fault as Fault
from ._faults import Response as Response
from ._matchers import Matcher as Matcher
from ._matchers import match as match
from ._matchers import matches_regex as matches_regex
from ._matching import Headers as Headers
from ._matching import Recorded as Recorded
from ._matching import Route as Route
from ._proxy import ProxiedRequest as ProxiedRequest
from ._proxy import Proxy as Proxy
from ._proxy import open_proxy as open_proxy
from ._proxy import proxy as proxy
from ._server import HarnessError as HarnessError
from ._server import HarnessServer as HarnessServer
from ._server import open_server as open_server
from ._server import serve as serve
from ._server import serving as serving
from ._tls import CertificateAuthority as CertificateAuthority
from ._tls import session_authority as session_authority
from ._websocket import WebSocketRoute as WebSocketRoute
from ._websocket import WebSocketSession as WebSocketSession

__all__ = [
    "CertificateAuthority",
    "Fault",
    "HarnessError",
    "HarnessServer",
    "Headers",
    "Matcher",
    "ProxiedRequest",
    "Proxy",
    "Recorded",
    "Response",
    "Route",
    "WebSocketRoute",
    "WebSocketSession",
    "match",
    "matches_regex",
    "open_proxy",
    "open_server",
    "proxy",
    "recording",
    "replaying",
    "serve",
    "serving",
    "session_authority",
]
