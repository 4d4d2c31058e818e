"""trioserve._static._filecache: the open-file cache, on its own and behind StaticFiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import serving
from trioserve._cli import _build_app, _CommandLine
from trioserve._config import Config
from trioserve._static import FileInfo, Representation, StaticFile, StaticFiles, _app
from trioserve._static._filecache import MAX_BODY_SIZE, FileCache

from .static_helpers import MTIME_NS, write
from .test_static import Response, call


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def static_file(name: str, size: int = 1, mtime_ns: int = 1) -> StaticFile:
    return StaticFile(name, Representation(f"/srv/{name}", FileInfo(size, mtime_ns, ino=7)))


class Loads:
    """A `load` that hands out what it is told to and counts its calls."""

    def __init__(self, found: StaticFile | None) -> None:
        self.found = found
        self.calls = 0

    def __call__(self) -> StaticFile | None:
        self.calls += 1
        return self.found


# -- FileCache on its own ------------------------------------------------------------------------


def test_an_entry_is_trusted_for_the_interval_then_looked_up_again() -> None:
    clock = FakeClock()
    cache = FileCache(1.0, clock=clock)
    load = Loads(static_file("a.txt"))
    assert cache.lookup("a.txt", load)[0] == load.found
    clock.now += 0.999
    assert cache.lookup("a.txt", load)[0] == load.found
    assert load.calls == 1
    clock.now += 0.001
    cache.lookup("a.txt", load)
    assert load.calls == 2


def test_the_same_file_found_again_keeps_its_plans_and_a_changed_one_drops_them() -> None:
    clock = FakeClock()
    cache = FileCache(1.0, clock=clock)
    load = Loads(static_file("a.txt"))
    _, plans = cache.lookup("a.txt", load)
    assert plans is not None
    plans[("GET", None)] = object()  # type: ignore[assignment]
    clock.now += 5
    assert cache.lookup("a.txt", load)[1] == plans
    load.found = static_file("a.txt", size=2)
    clock.now += 5
    found, plans = cache.lookup("a.txt", load)
    assert found == load.found
    assert plans == {}


def test_nothing_found_at_revalidation_drops_the_entry() -> None:
    clock = FakeClock()
    cache = FileCache(1.0, clock=clock)
    load = Loads(static_file("a.txt"))
    cache.lookup("a.txt", load)
    load.found = None
    clock.now += 1
    assert cache.lookup("a.txt", load) == (None, None)
    assert len(cache) == 0


def test_entries_are_evicted_least_recently_used_first() -> None:
    cache = FileCache(1.0, max_entries=2, clock=FakeClock())
    loads = {name: Loads(static_file(name)) for name in ("a", "b", "c")}
    cache.lookup("a", loads["a"])
    cache.lookup("b", loads["b"])
    cache.lookup("a", loads["a"])  # "b" is now the least recently used
    cache.lookup("c", loads["c"])
    assert len(cache) == 2
    cache.lookup("a", loads["a"])
    cache.lookup("b", loads["b"])
    assert (loads["a"].calls, loads["b"].calls, loads["c"].calls) == (1, 2, 1)


def test_bodies_are_bounded_in_bytes_least_recently_used_first() -> None:
    cache = FileCache(1.0, max_body_bytes=250, clock=FakeClock())
    a, b, c = (static_file(name, size=100).identity for name in "abc")
    cache.keep_body(a, b"a" * 100)
    cache.keep_body(b, b"b" * 100)
    assert cache.body(a) == b"a" * 100  # "b" is now the least recently used
    cache.keep_body(c, b"c" * 100)
    assert cache.body(b) is None
    assert cache.body(a) == b"a" * 100
    assert cache.body(c) == b"c" * 100
    assert cache.body_bytes == 200


def test_a_body_is_only_found_for_the_same_identity() -> None:
    cache = FileCache(1.0, clock=FakeClock())
    cache.keep_body(static_file("a", size=1, mtime_ns=1).identity, b"x")
    assert cache.body(static_file("a", size=1, mtime_ns=2).identity) is None


def test_a_body_kept_for_a_changed_file_replaces_the_one_kept_for_its_old_identity() -> None:
    cache = FileCache(1.0, clock=FakeClock())
    old = static_file("a", size=3, mtime_ns=1).identity
    new = static_file("a", size=5, mtime_ns=2).identity
    cache.keep_body(old, b"old")
    cache.keep_body(new, b"newer")
    assert cache.body(old) is None
    assert cache.body(new) == b"newer"
    assert cache.body_bytes == 5


def test_bodies_over_the_small_file_size_are_not_kept() -> None:
    cache = FileCache(1.0, clock=FakeClock())
    big = static_file("big", size=MAX_BODY_SIZE + 1).identity
    cache.keep_body(big, b"x" * (MAX_BODY_SIZE + 1))
    assert cache.body(big) is None
    assert cache.body_bytes == 0


@pytest.mark.parametrize("valid", [0.0, -1.0])
def test_an_interval_of_zero_or_less_is_refused(valid: float) -> None:
    with pytest.raises(ValueError, match="valid"):
        FileCache(valid)


# -- behind StaticFiles --------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root / "small.txt", b"small file\n")
    write(root / "big.bin", bytes(range(256)) * 400)  # 100 KiB: opened for every request
    write(root / "site.css", b"body { color: red }\n" * 20)
    write(root / "index.html", b"<p>home</p>\n")
    write(root / "docs" / "index.html", b"<p>docs</p>\n")
    write(tmp_path / "outside.txt", b"secret outside the root\n")
    return root


@pytest.fixture
def app(site: Path, clock: FakeClock) -> StaticFiles:
    app = StaticFiles(site)
    app.file_cache = FileCache(1.0, clock=clock)
    return app


def no_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(representation: Representation) -> int | None:
        raise AssertionError(f"opened {representation.path}")

    monkeypatch.setattr(_app, "open_verified", refuse)


def same(a: Response, b: Response) -> None:
    assert (a.status, a.headers, a.body, a.pathsend) == (b.status, b.headers, b.body, b.pathsend)


@pytest.mark.parametrize("path", ["/small.txt", "/big.bin", "/site.css"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_cache_hit_answers_as_a_cold_request_does(
    site: Path, app: StaticFiles, path: str, method: str
) -> None:
    cold = await call(StaticFiles(site, cache_valid=0), path, method=method)
    first = await call(app, path, method=method)
    hit = await call(app, path, method=method)
    assert cold.status == 200
    same(first, cold)
    same(hit, cold)


@pytest.mark.parametrize("path", ["/", "/docs/", "/docs", "/.", "/docs/.", "/docs/./"])
async def test_directory_urls_answer_as_cold_requests_do_in_any_order(
    site: Path, app: StaticFiles, path: str
) -> None:
    # "/docs/" (the index) and "/docs" (a redirect) must not share an entry's plans.
    cold = StaticFiles(site, cache_valid=0)
    for other in ["/", "/docs/", "/docs", "/.", "/docs/.", "/docs/./", path]:
        same(await call(app, other), await call(cold, other))


async def test_an_index_file_removed_is_404_once_the_interval_is_over(
    site: Path, app: StaticFiles, clock: FakeClock
) -> None:
    assert (await call(app, "/docs/")).body == b"<p>docs</p>\n"
    (site / "docs" / "index.html").unlink()
    clock.now += 1
    assert (await call(app, "/docs/")).status == 404


async def test_a_small_file_is_served_from_memory_once_cached(
    app: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await call(app, "/small.txt")
    no_open(monkeypatch)
    hit = await call(app, "/small.txt")
    assert hit.body == b"small file\n"
    same(hit, first)


async def test_dot_segments_share_the_entry(
    app: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    await call(app, "/small.txt")
    no_open(monkeypatch)
    assert (await call(app, "/big.bin/../small.txt")).body == b"small file\n"


async def test_each_client_gets_its_representation_from_one_entry(
    site: Path, app: StaticFiles
) -> None:
    write(site / "site.css.gz", b"gzipped bytes")
    plain = await call(app, "/site.css")
    gzipped = await call(app, "/site.css", headers=[("Accept-Encoding", "gzip")])
    again = await call(app, "/site.css")
    assert plain.body == again.body == b"body { color: red }\n" * 20
    assert gzipped.header[b"content-encoding"] == b"gzip"
    assert gzipped.body == b"gzipped bytes"


async def test_preconditions_and_ranges_are_decided_afresh_on_a_hit(app: StaticFiles) -> None:
    first = await call(app, "/small.txt")
    etag = first.header[b"etag"].decode()
    assert (await call(app, "/small.txt", headers=[("If-None-Match", etag)])).status == 304
    ranged = await call(app, "/small.txt", headers=[("Range", "bytes=0-4")])
    assert (ranged.status, ranged.body) == (206, b"small")
    assert (await call(app, "/small.txt")).status == 200


async def test_a_change_is_seen_once_the_interval_is_over(
    site: Path, app: StaticFiles, clock: FakeClock
) -> None:
    assert (await call(app, "/small.txt")).body == b"small file\n"
    write(site / "small.txt", b"changed, and longer\n", mtime_ns=MTIME_NS + 1)
    clock.now += 0.5
    assert (await call(app, "/small.txt")).body == b"small file\n"  # within the interval
    clock.now += 0.5
    changed = await call(app, "/small.txt")
    cold = await call(StaticFiles(site, cache_valid=0), "/small.txt")
    assert changed.body == b"changed, and longer\n"
    same(changed, cold)


async def test_a_new_precompressed_sibling_is_seen_once_the_interval_is_over(
    site: Path, app: StaticFiles, clock: FakeClock
) -> None:
    gzip_client = [("Accept-Encoding", "gzip")]
    await call(app, "/site.css", headers=gzip_client)
    write(site / "site.css.gz", b"gzipped bytes")
    clock.now += 1
    assert (await call(app, "/site.css", headers=gzip_client)).body == b"gzipped bytes"


async def test_a_deleted_file_is_404_once_the_interval_is_over(
    site: Path, app: StaticFiles, clock: FakeClock
) -> None:
    await call(app, "/small.txt")
    (site / "small.txt").unlink()
    clock.now += 1
    assert (await call(app, "/small.txt")).status == 404


@pytest.mark.parametrize("path", ["/small.txt", "/big.bin"])
async def test_a_symlink_swapped_in_to_leave_the_root_is_refused_once_the_interval_is_over(
    site: Path, app: StaticFiles, clock: FakeClock, path: str
) -> None:
    assert (await call(app, path)).status == 200
    name = site / path.lstrip("/")
    name.unlink()
    name.symlink_to(site.parent / "outside.txt")
    clock.now += 1
    response = await call(app, path)
    assert response.status == 404
    assert b"secret" not in response.body


async def test_a_big_file_swapped_for_a_symlink_is_refused_at_once_by_the_open(
    site: Path, app: StaticFiles
) -> None:
    # Within the interval, the entry names the old file; opening its real path (O_NOFOLLOW)
    # and checking what was opened refuses the symlink now there, and drops the entry.
    assert (await call(app, "/big.bin")).status == 200
    (site / "big.bin").unlink()
    (site / "big.bin").symlink_to(site.parent / "outside.txt")
    response = await call(app, "/big.bin")
    assert response.status == 404
    assert b"secret" not in response.body


async def test_no_cache_with_an_interval_of_zero(site: Path) -> None:
    app = StaticFiles(site, cache_valid=0)
    assert app.file_cache is None
    assert (await call(app, "/small.txt")).body == b"small file\n"
    write(site / "small.txt", b"changed\n", mtime_ns=MTIME_NS + 1)
    assert (await call(app, "/small.txt")).body == b"changed\n"


def test_a_negative_interval_is_refused(site: Path) -> None:
    with pytest.raises(ValueError, match="cache_valid"):
        StaticFiles(site, cache_valid=-1)


def test_the_command_line_interval_reaches_static_files(site: Path) -> None:
    app, _ = _build_app(_CommandLine(root=str(site), static_cache_valid=0), Config())
    assert isinstance(app, StaticFiles)
    assert app.file_cache is None
    app, _ = _build_app(_CommandLine(root=str(site), static_cache_valid=2.5), Config())
    assert isinstance(app, StaticFiles)
    assert app.file_cache is not None
    assert app.file_cache.valid == 2.5


# -- over a real socket --------------------------------------------------------------------------


@pytest.fixture
def wire(site: Path) -> Iterator[str]:
    with serving(app=StaticFiles(site)) as server:
        yield server.url


def test_a_cached_file_goes_out_as_a_cold_one_over_the_wire(wire: str, site: Path) -> None:
    with httpx.Client(base_url=wire, timeout=10) as client:
        first = client.get("/small.txt")
        hit = client.get("/small.txt")
    assert first.status_code == hit.status_code == 200
    assert hit.content == first.content == (site / "small.txt").read_bytes()
    without_date = [(k, v) for k, v in first.headers.items() if k != "date"]
    assert [(k, v) for k, v in hit.headers.items() if k != "date"] == without_date


def test_an_error_for_a_cached_path_follows_each_clients_accept_over_the_wire(
    wire: str,
) -> None:
    # "/small.txt/" finds the file (cached under that key) and is answered 404: the error's body
    # follows the Accept of the client that asked, not of the first one that asked.
    with httpx.Client(base_url=wire, timeout=10) as client:
        html = client.get("/small.txt/", headers={"Accept": "text/html"})
        as_json = client.get("/small.txt/", headers={"Accept": "application/json"})
        text = client.get("/small.txt/", headers={"Accept": "text/plain"})
        again = client.get("/small.txt/", headers={"Accept": "text/html"})
    assert [r.status_code for r in (html, as_json, text, again)] == [404] * 4
    assert html.headers["content-type"].startswith("text/html")
    assert as_json.headers["content-type"] == "application/problem+json"
    assert as_json.json()["status"] == 404
    assert text.headers["content-type"].startswith("text/plain")
    assert again.content == html.content
