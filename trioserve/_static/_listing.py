"""Directory listings: which entries of a directory are listed, and their HTML page."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable

from ._paths import DirEntry, is_inside, quote_segment, split_path

__all__ = ["list_directory", "render_listing"]


def list_directory(root: str, path: str, *, allow_dotfiles: bool = False) -> tuple[DirEntry, ...]:
    """List the servable entries of directory `path`: directories first, then by name.

    Entries that could not be served are left out: dotfiles (unless allowed), names
    `split_path` refuses, anything but directories and regular files, and symlinks that
    resolve outside `root`. Blocking; run it in a thread.

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
                if entry.is_dir():
                    entries.append(DirEntry(entry.name, is_dir=True))
                elif entry.is_file():
                    entries.append(DirEntry(entry.name))
            except (OSError, ValueError):  # vanished or unreadable entry: just not listed
                continue
    entries.sort(key=lambda entry: (not entry.is_dir, entry.name))
    return tuple(entries)


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def render_listing(url_path: str, entries: Iterable[DirEntry], *, parent: bool) -> bytes:
    """Render an HTML directory listing; every name is escaped, every href quoted.

    Args:
        url_path: The directory's URL path, for the title.
        entries: What to list, in order.
        parent: Whether to link to "../".
    """
    title = html.escape(f"Index of {_printable(url_path)}")
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        f'<head><meta charset="utf-8"><title>{title}</title></head>',
        "<body>",
        f"<h1>{title}</h1>",
        "<ul>",
    ]
    if parent:
        lines.append('<li><a href="../">../</a></li>')
    for entry in entries:
        slash = "/" if entry.is_dir else ""
        # safe="" quotes ":" too, so a name like "javascript:x" cannot become a scheme.
        href = html.escape(quote_segment(entry.name, "") + slash)
        text = html.escape(_printable(entry.name) + slash)
        lines.append(f'<li><a href="{href}">{text}</a></li>')
    lines += ["</ul>", "</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")
