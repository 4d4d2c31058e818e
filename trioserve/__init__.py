"""trioserve: a structured-concurrency HTTP/1.1 server on trio and h11.

It serves ASGI 3 applications and static files (:class:`StaticFiles`, itself an ASGI app)::

    import trio, trioserve

    async def main():
        await trioserve.serve(trioserve.StaticFiles("public"), trioserve.Config(port=8000))

    trio.run(main)
"""

from ._asgi import Mounts as Mounts
from ._asgi import as_asgi as as_asgi
from ._config import Config as Config
from ._errors import AppLoadError as AppLoadError
from ._errors import ClientDisconnected as ClientDisconnected
from ._errors import ConfigError as ConfigError
from ._errors import TrioserveError as TrioserveError
from ._server import Server as Server
from ._server import serve as serve
from ._static import StaticFiles as StaticFiles
from ._tls import TLSConfig as TLSConfig
from ._types import ASGIApp as ASGIApp
from ._types import Message as Message
from ._types import Receive as Receive
from ._types import Scope as Scope
from ._types import Send as Send
from ._version import __version__ as __version__
from ._wsgi import WSGIApp as WSGIApp

__all__ = [
    "ASGIApp",
    "AppLoadError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "Message",
    "Mounts",
    "Receive",
    "Scope",
    "Send",
    "Server",
    "StaticFiles",
    "TLSConfig",
    "TrioserveError",
    "WSGIApp",
    "__version__",
    "as_asgi",
    "serve",
]
