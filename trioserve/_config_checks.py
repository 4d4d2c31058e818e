"""The checks a :class:`~._config.Config` passes when it is made (its ``__post_init__``).

Kept apart from the declarations so that ``_config`` stays a readable list of settings; a new
setting with a range or a format adds its check here.
"""

from __future__ import annotations

import dataclasses
import math
from importlib.util import find_spec
from typing import TYPE_CHECKING

from ._accesslog import check_format
from ._errors import ConfigError
from ._listeners import parse_bind
from ._proxy import TrustedPeers
from ._settings import KiB

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["check_config"]


def check_config(config: Config) -> None:
    """Refuse settings that are out of range or malformed.

    Raises:
        ConfigError: with one line naming the setting and what it must be.
    """
    for field in dataclasses.fields(config):
        # Whole numbers are ints, not 10e6 or True: the protocol may be compiled
        # (scripts/compile.py), and compiled code refuses a float where it declares an int.
        if field.type in ("int", "int | None"):
            value = getattr(config, field.name)
            if type(value) is not int and not (value is None and field.type == "int | None"):
                raise ConfigError(f"{field.name} must be a whole number, not {value!r}")
    if not config.host:
        raise ConfigError("host must not be empty")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {config.port}")
    if config.backlog < 1:
        raise ConfigError(f"backlog must be at least 1, not {config.backlog}")
    if config.lifespan not in ("auto", "on", "off"):
        raise ConfigError(f"lifespan must be auto, on or off, not {config.lifespan!r}")
    for name in (
        "lifespan_startup_timeout",
        "lifespan_shutdown_timeout",
        "keep_alive_timeout",
        "header_timeout",
        "body_timeout",
        "write_timeout",
        "graceful_timeout",
        "shutdown_delay",
        "min_head_rate_after",
    ):
        value = getattr(config, name)
        if not (value >= 0 and not math.isnan(value)):
            raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
    if config.max_header_size < 1 * KiB:
        raise ConfigError(f"max_header_size must be at least 1024, not {config.max_header_size}")
    if config.h2_max_concurrent_streams < 1:
        raise ConfigError(
            f"h2_max_concurrent_streams must be at least 1, not {config.h2_max_concurrent_streams}"
        )
    if config.interface not in ("auto", "asgi", "wsgi"):
        raise ConfigError(f"interface must be auto, asgi or wsgi, not {config.interface!r}")
    if config.http_parser not in ("auto", "h11", "httptools", "python"):
        raise ConfigError(
            f"http_parser must be auto, h11, httptools or python, not {config.http_parser!r}"
        )
    if config.http_parser == "httptools" and find_spec("httptools") is None:
        raise ConfigError("http_parser httptools: pip install 'trioserve[speedups]'")
    if config.wsgi_threads < 1:
        raise ConfigError(f"wsgi_threads must be at least 1, not {config.wsgi_threads}")
    if config.max_headers < 1:
        raise ConfigError(f"max_headers must be at least 1, not {config.max_headers}")
    if config.max_body_size is not None and config.max_body_size < 0:
        raise ConfigError(f"max_body_size must be >= 0, not {config.max_body_size}")
    if config.ws_max_message_size < 1:
        raise ConfigError(f"ws_max_message_size must be >= 1, not {config.ws_max_message_size}")
    if config.ws_ping_interval is not None and not config.ws_ping_interval > 0:
        raise ConfigError(
            f"ws_ping_interval must be > 0 seconds or None, not {config.ws_ping_interval!r}"
        )
    if not config.ws_ping_timeout > 0:
        raise ConfigError(f"ws_ping_timeout must be > 0 seconds, not {config.ws_ping_timeout!r}")
    for bind in (*config.binds, *config.insecure_binds):
        try:
            parse_bind(bind)
        except ValueError as exc:
            raise ConfigError(f"bind: {exc}") from None
    if config.metrics_bind is not None:
        try:
            parse_bind(config.metrics_bind)
        except ValueError as exc:
            raise ConfigError(f"metrics_bind: {exc}") from None
    if config.redirect_to_https and (config.tls is None or not config.insecure_binds):
        raise ConfigError("redirect_to_https needs TLS and at least one insecure bind")
    if config.proxy_headers not in ("off", "x-forwarded", "forwarded"):
        raise ConfigError(
            f"proxy_headers must be off, x-forwarded or forwarded, not {config.proxy_headers!r}"
        )
    try:
        TrustedPeers(config.forwarded_allow_ips)
    except ValueError as exc:
        raise ConfigError(f"forwarded_allow_ips: {exc}") from None
    if config.max_requests is not None and config.max_requests < 1:
        raise ConfigError(f"max_requests must be at least 1, not {config.max_requests}")
    if config.max_requests_jitter < 0:
        raise ConfigError(f"max_requests_jitter must be >= 0, not {config.max_requests_jitter}")
    if config.access_log_format is not None:
        try:
            check_format(config.access_log_format)
        except ValueError as exc:
            raise ConfigError(f"access_log_format: {exc}") from None
    if config.health_path is not None and not config.health_path.startswith("/"):
        raise ConfigError(f"health_path must start with '/', not {config.health_path!r}")
    if config.max_connections < 1:
        raise ConfigError(f"max_connections must be at least 1, not {config.max_connections}")
    if config.max_connections_per_ip is not None and config.max_connections_per_ip < 1:
        raise ConfigError(
            f"max_connections_per_ip must be at least 1, not {config.max_connections_per_ip}"
        )
    if config.max_websockets is not None and config.max_websockets < 0:
        raise ConfigError(f"max_websockets must be >= 0, not {config.max_websockets}")
    if config.min_head_rate < 0:
        raise ConfigError(f"min_head_rate must be >= 0, not {config.min_head_rate}")
    if config.server_header is not None and not _is_header_text(config.server_header):
        raise ConfigError("server_header must be printable ASCII")
    if config.root_path and (
        not config.root_path.startswith("/") or config.root_path.endswith("/")
    ):
        raise ConfigError(
            f"root_path must start with '/' and not end with one, not {config.root_path!r}"
        )


def _is_header_text(value: str) -> bool:
    return value.isascii() and value.isprintable()
