"""Settings declared once, and the command line and TOML loader generated from them.

Theory of operation
-------------------
A setting is a dataclass field whose metadata holds a frozen :class:`Setting`: its flag, help,
``--help`` group, metavar, choices and parse function (text to value). ``Config``'s fields are
declared this way with :func:`setting`; so are the few settings the command line has beyond
``Config`` (in ``_cli``), and ``TLSConfig``'s fields get theirs attached with
:func:`options_for`. :func:`options_of` reads the declarations back as :class:`Option` values
(name, default, setting), and everything else is generated from those:

* :func:`add_options` makes the argparse arguments. Every one defaults to
  ``argparse.SUPPRESS``, so the parsed namespace holds only what the command line gave.
* :func:`load_toml` reads a TOML file whose keys are the flags' names (``keep-alive-timeout``
  or ``keep_alive_timeout``) into the same ``{name: value}`` form, through the same parse
  functions and choices. A key that names no option is an error, never ignored.

So precedence (command line over file over the field's default) is one dict merge, a repeatable
flag on the command line replaces the file's list, and the defaults stay where they are
declared: the dataclass fills in whatever was not given.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol, TypeVar

__all__ = [
    "KiB",
    "MiB",
    "Option",
    "Parser",
    "Setting",
    "UsageError",
    "add_options",
    "format_size",
    "given",
    "load_toml",
    "options_for",
    "options_of",
    "parse_octal",
    "parse_seconds",
    "parse_size",
    "setting",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# The --help groups, in the order they are printed.
LISTEN = "where to listen"
SERVE = "what to serve"
FILES = "static files"
PROCESSES = "processes"
LIMITS = "limits and timeouts"
PROXY = "behind a proxy"
WEBSOCKETS = "websockets"
HTTP2 = "HTTP/2"
TLS = "TLS (HTTPS)"
OUTPUT = "headers and logging"
GROUPS = (LISTEN, SERVE, FILES, PROCESSES, LIMITS, PROXY, WEBSOCKETS, HTTP2, TLS, OUTPUT)

Kind = Literal["value", "flag", "switch", "list", "optional", "positional"]
"""How a setting appears on the command line:

* ``value``: ``--name VALUE``;
* ``flag``: ``--name`` alone turns it on (``true``/``false`` in TOML);
* ``switch``: ``--name`` / ``--no-name`` (``true``/``false`` in TOML);
* ``list``: ``--name VALUE`` repeated (a list, or one value, in TOML);
* ``optional``: ``--name`` alone means ``const``, ``--name VALUE`` a value;
* ``positional``: the command's argument (optional), TOML key ``name``.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """How one dataclass field is set from the command line and from a TOML file.

    Attributes:
        help: What ``--help`` says; ``(default: ...)`` is added from the field's default.
        group: The ``--help`` group (one of :data:`GROUPS`).
        flag: The flag; ``--`` and the field's name with dashes unless given. The TOML key is
            the flag without its dashes.
        kind: See :data:`Kind`.
        metavar: The value's placeholder in ``--help``.
        choices: The accepted values, if only a few are.
        parse: Text (from argv, or a TOML scalar as text) to value; raises ``ValueError`` or
            ``argparse.ArgumentTypeError``. ``None`` keeps the text.
        const: The value of a bare ``optional`` flag.
        show: How ``--help`` prints the default.
    """

    help: str
    group: str
    flag: str | None = None
    kind: Kind = "value"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    const: object = None
    show: Callable[[Any], str] = str

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown --help group {self.group!r}")


_T = TypeVar("_T")


def setting(default: _T, **declaration: Any) -> _T:
    """A dataclass field with ``default`` that is also a setting (``Setting(**declaration)``).

    Typed as the default itself, so that ``port: int = setting(8000, ...)`` type-checks.
    """
    field: _T = dataclasses.field(default=default, metadata={"setting": Setting(**declaration)})
    return field


@dataclass(frozen=True, slots=True)
class Option:
    """One setting with the field it sets: ``name`` is the field's (and the parsed value's) name."""

    name: str
    default: Any
    setting: Setting

    @property
    def flag(self) -> str:
        if self.setting.kind == "positional":
            return self.name
        return self.setting.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The TOML key (dashes; underscores are accepted too)."""
        return self.flag.removeprefix("--")


def options_of(cls: type) -> list[Option]:
    """The options declared on a dataclass's fields, in field order."""
    return [
        Option(field.name, field.default, field.metadata["setting"])
        for field in dataclasses.fields(cls)
        if "setting" in field.metadata
    ]


def options_for(cls: type, **settings: Setting) -> list[Option]:
    """Options for fields of a dataclass that cannot carry the declaration itself.

    The defaults still come from the dataclass; a name that is not a field is an error.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(cls)}
    return [Option(name, defaults[name], declared) for name, declared in settings.items()]


# -- parse and show functions ----------------------------------------------------------------


def parse_size(text: str) -> int:
    """A byte count: ``65536``, or with a unit (powers of 1024): ``64K``, ``64KiB``, ``1 MiB``."""
    multipliers = {"k": KiB, "m": MiB, "g": GiB}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = multipliers.get(value[-1:], 1)
    if factor != 1:
        value = value[:-1]
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return number * factor


def format_size(size: int) -> str:
    """``16384`` as ``16 KiB``: the largest unit that divides it exactly."""
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0: {text!r}")
    return value


def parse_seconds_or_off(text: str) -> float | None:
    """Seconds, where ``0`` means never (``None``)."""
    return parse_seconds(text) or None


def show_seconds(seconds: float | None) -> str:
    return "off" if seconds is None else f"{seconds:g}"


def parse_octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return value


# -- the command line ------------------------------------------------------------------------


class UsageError(Exception):
    """Bad usage: one line for the user, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_options(
    parser: argparse.ArgumentParser,
    options: Iterable[Option],
    descriptions: Mapping[str, str] = {},  # read only
) -> None:
    """Add one argument per option, in :data:`GROUPS` order; none has a default."""
    options = list(options)
    names = [option.name for option in options]
    if len(set(names)) != len(names):
        raise ValueError(f"two options set the same name: {sorted(names)}")
    for title in GROUPS:
        members = [option for option in options if option.setting.group == title]
        if not members:
            continue
        group = parser.add_argument_group(title, descriptions.get(title))
        for option in members:
            target = parser if option.setting.kind == "positional" else group
            _add_argument(target, option)


class _Container(Protocol):
    # What a parser and an argument group share (argparse names no public type for it).
    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


def _add_argument(target: _Container, option: Option) -> None:
    declared = option.setting
    shown = _shown_default(option)
    parts = [declared.help, "" if shown is None else f"(default: {shown})"]
    help_text = " ".join(part for part in parts if part).replace("%", "%%")
    common: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
    if declared.kind == "flag":
        target.add_argument(option.flag, action="store_true", dest=option.name, **common)
    elif declared.kind == "switch":
        target.add_argument(
            option.flag, action=argparse.BooleanOptionalAction, dest=option.name, **common
        )
    else:
        common.update(type=declared.parse, choices=declared.choices, metavar=declared.metavar)
        if declared.kind == "positional":
            target.add_argument(option.name, nargs="?", **common)
        elif declared.kind == "list":
            target.add_argument(option.flag, action="append", dest=option.name, **common)
        elif declared.kind == "optional":
            target.add_argument(
                option.flag, nargs="?", const=declared.const, dest=option.name, **common
            )
        else:
            target.add_argument(option.flag, dest=option.name, **common)


def _shown_default(option: Option) -> str | None:
    default = option.default
    if option.setting.kind == "switch":
        return "on" if default else "off"
    if default is None or default is False or default in ("", ()):
        return None
    return option.setting.show(default)


def given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as ``{name: value}``; repeated flags' lists become tuples."""
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in vars(namespace).items()
    }


# -- the TOML file ---------------------------------------------------------------------------


def load_toml(path: str, options: Iterable[Option]) -> dict[str, Any]:
    """The file's settings as ``{name: value}``, converted as their flags would be.

    Raises:
        UsageError: the file cannot be read, or a key is unknown or its value invalid (the
            message names the file and the key).
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML: {exc}") from None
    by_key = {option.key.replace("-", "_"): option for option in options}
    values: dict[str, Any] = {}
    for key, value in data.items():
        option = by_key.get(key.replace("-", "_"))
        if option is None:
            raise UsageError(f"--config {path}: unknown key {key!r}")
        values[option.name] = _toml_value(f"--config {path}: {key}", option.setting, value)
    return values


def _toml_value(where: str, declared: Setting, value: object) -> object:
    if declared.kind in ("flag", "switch"):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, not {value!r}")
        return value
    if declared.kind == "list":
        items = value if isinstance(value, list) else [value]
        return tuple(_toml_scalar(where, declared, item) for item in items)
    return _toml_scalar(where, declared, value)


def _toml_scalar(where: str, declared: Setting, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"{where}: expected a string or a number, not {value!r}")
    converted: object = str(value)
    if declared.parse is not None:
        try:
            converted = declared.parse(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    if declared.choices is not None and converted not in declared.choices:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(declared.choices)}")
    return converted
