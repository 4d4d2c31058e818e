"""Directory listings: which entries of a directory are listed, their order, and their forms.

`list_directory` reads the disk (run it in a thread); the rest is pure. A listing comes as an
HTML table (name, size, modification time; sortable through plain links, no JavaScript), as
JSON, or as plain text, whichever the client's Accept prefers.
"""

from __future__ import annotations

import html
import json
import os
import time
import urllib.parse
from collections.abc import Iterable, Sequence

from ._paths import DirEntry, is_inside, quote_segment, split_path

__all__ = [
    "LISTING_TYPES",
    "SORT_KEYS",
    "list_directory",
    "parse_sort",
    "render_listing",
    "render_listing_json",
    "render_listing_text",
    "sort_entries",
]

#: The listing's forms, in the server's order for a tie (`*/*` gets HTML): what
#: `preferred_media_type` chooses from.
LISTING_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text/html", ("text/html", "application/xhtml+xml")),
    ("application/json", ("application/json",)),
    ("text/plain", ("text/plain",)),
)

#: The orders a listing can be sorted in (`?sort=`); directories always come first.
SORT_KEYS = ("name", "size", "time")

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")

# Light and dark through prefers-color-scheme; no script, no external resource.
_STYLE = """\
:root{color-scheme:light dark;--fg:#1f2328;--bg:#fff;--muted:#59636e;--line:#d1d9e0;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;\
--line:#3d444d;--link:#4493f8}}
body{font:16px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:1rem}
h1{font-size:1.25rem;word-break:break-all}
table{border-collapse:collapse;width:100%}
th,td{padding:.3rem .6rem;border-bottom:1px solid var(--line);text-align:left}
td.size,th.size{text-align:right;white-space:nowrap}
td.time{white-space:nowrap;color:var(--muted)}
td.name{word-break:break-all}
a{color:var(--link);text-decoration:none}
a:hover{text-decoration:underline}
@media (max-width:600px){td.time,th.time{display:none}}"""


def list_directory(root: str, path: str, *, allow_dotfiles: bool = False) -> tuple[DirEntry, ...]:
    """List the servable entries of directory `path`, with size and mtime, sorted by name.

    Directories come first. Entries that could not be served are left out: dotfiles (unless
    allowed), names `split_path` refuses, anything but directories and regular files, and
    symlinks that resolve outside `root`. Blocking; run it in a thread.

    Raises:
        OSError: If the directory cannot be read.
    """
    entries: list[DirEntry] = []
    with os.scandir(path) as scan:
        for entry in scan:
            if split_path(entry.name, allow_dotfiles=allow_dotfiles) != (entry.name,):
                continue
            try:
                if entry.is_symlink() and not is_inside(root, os.path.realpath(entry.path)):
                    continue
                st = entry.stat()  # follows a symlink, as serving the entry would
                if entry.is_dir():
                    entries.append(DirEntry(entry.name, True, 0, int(st.st_mtime)))
                elif entry.is_file():
                    entries.append(DirEntry(entry.name, False, st.st_size, int(st.st_mtime)))
            except (OSError, ValueError):  # vanished or unreadable entry: just not listed
                continue
    return sort_entries(entries)


def parse_sort(query_string: bytes) -> tuple[str, bool]:
    """The listing order asked for by `?sort=name|size|time&order=asc|desc`: (key, descending).

    Anything else is the default, by name ascending.
    """
    query = urllib.parse.parse_qs(query_string.decode("latin-1"), max_num_fields=8)
    key = query.get("sort", ["name"])[0]
    if key not in SORT_KEYS:
        key = "name"
    return key, query.get("order", ["asc"])[0] == "desc"


def sort_entries(
    entries: Iterable[DirEntry], key: str = "name", descending: bool = False
) -> tuple[DirEntry, ...]:
    """Directories first, then `key` ("name", "size" or "time"), names breaking ties."""
    ordered = sorted(entries, key=lambda entry: entry.name)
    if key == "size":
        ordered.sort(key=lambda entry: entry.size, reverse=descending)
    elif key == "time":
        ordered.sort(key=lambda entry: entry.mtime, reverse=descending)
    elif descending:
        ordered.reverse()
    ordered.sort(key=lambda entry: not entry.is_dir)  # stable: keeps the order within each
    return tuple(ordered)


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def human_size(size: int) -> str:
    """`size` bytes in binary units: "512 B", "1.5 KiB", "12 MiB"."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def _iso(mtime: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


def _href(entry: DirEntry) -> str:
    # safe="" quotes ":" too, so a name like "javascript:x" cannot become a scheme.
    return quote_segment(entry.name, "") + ("/" if entry.is_dir else "")


def render_listing(
    url_path: str,
    entries: Sequence[DirEntry],
    *,
    parent: bool,
    sort: str = "name",
    descending: bool = False,
) -> bytes:
    """Render an HTML directory listing; every name is escaped, every href quoted.

    Args:
        url_path: The directory's URL path, for the title.
        entries: What to list, in order.
        parent: Whether to link to "../".
        sort: The key the entries are sorted by, marked in the table head.
        descending: Whether they are sorted in descending order.
    """
    title = html.escape(f"Index of {_printable(url_path)}")
    head_cells = []
    for key, label, css in (
        ("name", "Name", "name"),
        ("size", "Size", "size"),
        ("time", "Modified", "time"),
    ):
        # A column's link sorts by it ascending, or flips the order when it is the current one.
        order = "desc" if key == sort and not descending else "asc"
        mark = (" \u25bc" if descending else " \u25b2") if key == sort else ""
        head_cells.append(
            f'<th class="{css}"><a href="?sort={key}&amp;order={order}">{label}</a>{mark}</th>'
        )
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{title}</title>",
        f"<style>\n{_STYLE}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{title}</h1>",
        "<table>",
        f"<thead><tr>{''.join(head_cells)}</tr></thead>",
        "<tbody>",
    ]
    if parent:
        lines.append(
            '<tr><td class="name"><a href="../">../</a></td>'
            '<td class="size">-</td><td class="time"></td></tr>'
        )
    escape = html.escape
    for entry in entries:
        text = escape(_printable(entry.name) + ("/" if entry.is_dir else ""))
        size = "-" if entry.is_dir else human_size(entry.size)
        iso = _iso(entry.mtime)
        lines.append(
            f'<tr><td class="name"><a href="{escape(_href(entry))}">{text}</a></td>'
            f'<td class="size">{size}</td>'
            f'<td class="time"><time datetime="{iso}">{iso[:10]} {iso[11:16]}</time></td></tr>'
        )
    lines += ["</tbody>", "</table>", "</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render_listing_json(url_path: str, entries: Iterable[DirEntry]) -> bytes:
    """The listing as JSON: the directory's path and, per entry, name, type, size, mtime, url."""
    listing = {
        "path": _printable(url_path),
        "entries": [
            {
                "name": _printable(entry.name),
                "type": "directory" if entry.is_dir else "file",
                "size": None if entry.is_dir else entry.size,
                "mtime": _iso(entry.mtime),
                "url": _href(entry),
            }
            for entry in entries
        ],
    }
    return json.dumps(listing, ensure_ascii=False).encode("utf-8") + b"\n"


def render_listing_text(entries: Iterable[DirEntry]) -> bytes:
    """The listing as text: one name a line, directories with a trailing "/"."""
    names = (
        # A name with a line break would forge a line: such names are shown escaped.
        _printable(entry.name).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        + ("/" if entry.is_dir else "")
        + "\n"
        for entry in entries
    )
    return "".join(names).encode("utf-8")
