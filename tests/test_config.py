"""Config's validation, and the command line and TOML loader generated from its declarations."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from trioserve import Config
from trioserve._cli import _COMMAND, _CONFIG, _OPTIONS, _CommandLine, _make_config, _settings, main
from trioserve._errors import ConfigError
from trioserve._settings import KiB, MiB, Option, format_size, parse_size

# -- Config validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"host": ""}, "host"),
        ({"port": -1}, "port"),
        ({"port": 65536}, "port"),
        ({"backlog": 0}, "backlog"),
        ({"lifespan": "sometimes"}, "lifespan"),
        *[
            ({name: bad}, name)
            for name in (
                "keep_alive_timeout",
                "header_timeout",
                "body_timeout",
                "write_timeout",
                "graceful_timeout",
                "lifespan_startup_timeout",
                "lifespan_shutdown_timeout",
            )
            for bad in (-1.0, math.nan)
        ],
        ({"max_header_size": 1023}, "max_header_size"),
        ({"max_headers": 0}, "max_headers"),
        ({"h2_max_concurrent_streams": 0}, "h2_max_concurrent_streams"),
        ({"max_body_size": -1}, "max_body_size"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_connections_per_ip": 0}, "max_connections_per_ip"),
        ({"max_websockets": -1}, "max_websockets"),
        ({"min_head_rate": -1}, "min_head_rate"),
        ({"min_head_rate_after": -1.0}, "min_head_rate_after"),
        ({"ws_max_message_size": 0}, "ws_max_message_size"),
        ({"ws_ping_interval": 0.0}, "ws_ping_interval"),
        ({"ws_ping_timeout": 0.0}, "ws_ping_timeout"),
        ({"binds": ("127.0.0.1:notaport",)}, "bind"),
        ({"insecure_binds": ("nowhere",)}, "bind"),
        ({"redirect_to_https": True}, "redirect_to_https"),
        ({"proxy_headers": "x-real-ip"}, "proxy_headers"),
        ({"forwarded_allow_ips": "not an address"}, "forwarded_allow_ips"),
        ({"max_requests": 0}, "max_requests"),
        ({"max_requests_jitter": -1}, "max_requests_jitter"),
        ({"access_log_format": "{no_such_atom}"}, "access_log_format"),
        ({"health_path": "healthz"}, "health_path"),
        ({"server_header": "caf\u00e9"}, "server_header"),
        ({"root_path": "api"}, "root_path"),
        ({"root_path": "/api/"}, "root_path"),
        ({"http_parser": "picohttpparser"}, "http_parser"),
        # Found in review: whole numbers must be ints (a compiled protocol refuses a float).
        ({"max_body_size": 10 * 1e6}, "max_body_size must be a whole number"),
        ({"max_header_size": 16384.0}, "max_header_size must be a whole number"),
        ({"max_headers": True}, "max_headers must be a whole number"),
        ({"port": 8000.0}, "port must be a whole number"),
    ],
)
def test_each_invalid_value_raises_config_error_naming_the_setting(
    changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        Config(**changes)


def test_http_parser_httptools_needs_the_speedups_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config(http_parser="httptools").http_parser == "httptools"
    monkeypatch.setattr("trioserve._config_checks.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"http_parser httptools: pip install"):
        Config(http_parser="httptools")
    assert Config(http_parser="auto").http_parser == "auto"  # the Python fast path: no extra needed


def test_max_headers_defaults_to_apaches_limit_and_accepts_one() -> None:
    assert Config().max_headers == 100
    assert Config(max_headers=1).max_headers == 1


# -- the generated command line ----------------------------------------------------------------

# Added to main()'s argv where a regression would otherwise start a real server (and hang the
# test): the run then fails on this instead, with another message than the one expected.
NEVER_SERVE = ["--root", "/no/such/directory"]


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--help"]) == 0
    return capsys.readouterr().out


def help_group(text: str, title: str) -> str:
    """The lines of one --help group, from its title to the next blank-line-then-title."""
    match = re.search(rf"^{re.escape(title)}:\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    assert match, f"no group {title!r} in --help"
    return match.group(1)


# Config fields the command line does not set, on purpose (Python API only): TLS is set through
# the --tls/--certfile flags, the rest are for embedding and tests.
PYTHON_ONLY = {
    "backlog",
    "tls",
    "lifespan_startup_timeout",
    "lifespan_shutdown_timeout",
    "fault_injection",
}


def test_every_config_field_has_a_flag_or_is_known_to_be_python_only() -> None:
    declared = {option.name for option in _CONFIG}
    fields = {field.name for field in dataclasses.fields(Config)}
    assert fields - declared == PYTHON_ONLY


def test_every_option_appears_in_help_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys)
    for option in _OPTIONS:
        assert re.search(rf"(^|\s|\[){re.escape(option.flag)}\b", text), option.flag
    assert "--max-headers N " in text
    assert "(default: 100)" in text


def test_help_prints_sizes_in_units_and_workers_with_the_processes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys)
    limits = help_group(text, "limits and timeouts")
    assert "(default: 16 KiB)" in " ".join(limits.split())
    assert "(default: 100 MiB)" in " ".join(limits.split())
    assert "(default: 16 MiB)" in " ".join(help_group(text, "websockets").split())
    assert "--workers" not in limits
    processes = help_group(text, "processes")
    for flag in ("--workers", "--max-requests", "--max-requests-jitter"):
        assert flag in processes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("65536", 64 * KiB),
        ("64K", 64 * KiB),
        ("64k", 64 * KiB),
        ("64KiB", 64 * KiB),
        ("64 KiB", 64 * KiB),
        ("1MiB", MiB),
        ("1M", MiB),
        ("2G", 2048 * MiB),
    ],
)
def test_sizes_accept_plain_bytes_and_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("size", "text"),
    [(16 * KiB, "16 KiB"), (100 * MiB, "100 MiB"), (1024 * MiB, "1 GiB"), (1000, "1000 bytes")],
)
def test_sizes_print_in_the_largest_exact_unit(size: int, text: str) -> None:
    assert format_size(size) == text


def test_size_flags_take_units(capsys: pytest.CaptureFixture[str]) -> None:
    values = _settings(["--max-header-size", "64KiB", "--max-body-size", "1MiB"])
    config = _make_config(values, _CommandLine())
    assert (config.max_header_size, config.max_body_size) == (64 * KiB, MiB)


def test_abbreviated_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--por", "80", *NEVER_SERVE]) == 2
    err = capsys.readouterr().err
    assert err == "trioserve: error: unrecognized arguments: --por\n"


def test_max_headers_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _make_config(_settings(["--max-headers", "50"]), _CommandLine()).max_headers == 50
    assert main(["--max-headers", "0", *NEVER_SERVE]) == 2
    assert capsys.readouterr().err == ("trioserve: error: max_headers must be at least 1, not 0\n")
    assert main(["--max-headers", "many", *NEVER_SERVE]) == 2
    assert "argument --max-headers: invalid int value: 'many'" in capsys.readouterr().err


# -- TOML and the command line agree -----------------------------------------------------------

# A value unlike the default for every option that takes one; flags and switches are flipped.
SAMPLES = {
    "app": "json:dumps",
    "root": "site",
    "static": "/assets=public",
    "app_dir": "src",
    "dotfiles": "allow",
    "cache_control": "*.html=no-cache",
    "compress_min_size": "2048",
    "compress_cache_size": "1048576",
    "error_pages": "404=404.html",
    "spa_fallback": "index.html",
    "static_cache_valid": "0",
    "workers": "3",
    "reload_dirs": "src",
    "reload_include": "*.html",
    "reload_exclude": "tests/*",
    "access_log_file": "access.log",
    "log_level": "debug",
    "log_config": "logging.json",
    "host": "0.0.0.0",
    "port": "9000",
    "uds": "/run/app.sock",
    "binds": "127.0.0.1:9443",
    "insecure_binds": "127.0.0.1:9080",
    "metrics_bind": "127.0.0.1:9100",
    "uds_mode": "600",
    "keep_alive_timeout": "7.5",
    "header_timeout": "3",
    "body_timeout": "4",
    "write_timeout": "5",
    "graceful_timeout": "6",
    "shutdown_delay": "2",
    "max_header_size": "32KiB",
    "max_headers": "50",
    "h2_max_concurrent_streams": "50",
    "max_body_size": "1M",
    "max_connections": "10",
    "max_connections_per_ip": "4",
    "min_head_rate": "100",
    "min_head_rate_after": "2",
    "max_websockets": "3",
    "server_header": "trioserve-test",
    "access_log_format": "{status} {path}",
    "root_path": "/api/",
    "lifespan": "off",
    "interface": "wsgi",
    "http_parser": "h11",
    "wsgi_threads": "4",
    "proxy_headers": "forwarded",
    "forwarded_allow_ips": "10.0.0.0/8",
    "health_path": "/healthz",
    "max_requests": "500",
    "max_requests_jitter": "50",
    "ws_max_message_size": "1MiB",
    "ws_ping_interval": "0",
    "ws_ping_timeout": "5",
    "certfile": "cert.pem",
    "keyfile": "key.pem",
    "keyfile_password_file": "password.txt",
    "min_version": "1.3",
    "ciphers": "ECDHE+AESGCM",
    "ca_certs": "clients.pem",
    "client_cert": "required",
    "handshake_timeout": "3",
    "state_dir": "/var/lib/trioserve",
}


def as_argv(option: Option) -> list[str]:
    kind = option.setting.kind
    if kind == "flag":
        return [option.flag]
    if kind == "switch":
        return [option.flag if not option.default else "--no-" + option.flag.removeprefix("--")]
    if kind == "positional":
        return [SAMPLES[option.name]]
    return [option.flag, SAMPLES[option.name]]


def as_toml(option: Option) -> str:
    if option.setting.kind in ("flag", "switch"):
        return f"{option.key} = {'false' if option.default else 'true'}"
    text = SAMPLES[option.name]
    return f"{option.key} = {text if text.isdigit() else repr(text)}"


def test_every_option_has_a_sample() -> None:
    takes_a_value = {o.name for o in _OPTIONS if o.setting.kind not in ("flag", "switch")}
    assert takes_a_value == set(SAMPLES)


def test_toml_and_the_command_line_give_the_same_settings_and_config(tmp_path: Path) -> None:
    argv = [arg for option in _OPTIONS for arg in as_argv(option)]
    file = tmp_path / "trioserve.toml"
    file.write_text("\n".join(as_toml(option) for option in _OPTIONS) + "\n")
    from_flags = _settings(argv)
    from_file = _settings(["--config", str(file)])
    assert from_flags == from_file
    assert set(from_flags) == {o.name for o in _OPTIONS} | {"worker_fds", "worker_ready_fd"}
    command = _CommandLine(**{o.name: from_file[o.name] for o in _COMMAND})
    config = _make_config(from_file, command)
    assert config == _make_config(from_flags, command)
    # Every setting reached Config (none kept its default), converted as the flag converts it.
    for option in _CONFIG:
        assert getattr(config, option.name) != option.default, option.name
    assert config.max_headers == 50
    assert config.max_header_size == 32 * KiB
    assert config.ws_ping_interval is None
    assert config.root_path == "/api"
    assert config.tls is not None
    assert config.tls.min_version == "1.3"


def test_toml_keys_may_use_underscores_or_dashes(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("max_headers = 20\nmax-header-size = '2K'\nkeep_alive_timeout = 1.5\n")
    config = _make_config(_settings(["--config", str(file)]), _CommandLine())
    assert (config.max_headers, config.max_header_size) == (20, 2 * KiB)
    assert config.keep_alive_timeout == 1.5


def test_flags_override_the_file(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("port = 1\nmax_headers = 20\nbind = ['127.0.0.1:1', '127.0.0.1:2']\n")
    values = _settings(["--config", str(file), "--port", "2", "--bind", "127.0.0.1:3"])
    config = _make_config(values, _CommandLine())
    assert (config.port, config.max_headers) == (2, 20)
    assert config.binds == ("127.0.0.1:3",)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("max_header = 5\n", "unknown key 'max_header'"),
        ("binds = ['127.0.0.1:1']\n", "unknown key 'binds'"),  # the key is the flag's: bind
        ("worker-fds = '3:plain'\n", "unknown key 'worker-fds'"),  # not a setting
        ("config = 'other.toml'\n", "unknown key 'config'"),
        ("[server]\nport = 1\n", "unknown key 'server'"),
        ("max_headers = 0\n", "max_headers must be at least 1, not 0"),
        ("max_headers = 'many'\n", "max_headers: invalid literal for int()"),
        ("max-body-size = '10 parsecs'\n", "max-body-size: not a size in bytes"),
        ("lifespan = 'sometimes'\n", "lifespan: 'sometimes' is not one of auto, on, off"),
        ("date-header = 1\n", "date-header: expected true or false"),
    ],
)
def test_bad_toml_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, toml: str, message: str
) -> None:
    file = tmp_path / "trioserve.toml"
    file.write_text(toml)
    assert main(["--config", str(file), *NEVER_SERVE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trioserve: error: ")
    assert err.count("\n") == 1, err
    assert message in err
