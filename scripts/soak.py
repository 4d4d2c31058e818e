"""Soak test: minutes of mixed load against a real ``python -m trioserve``; RSS and fds watched.

    python scripts/soak.py [MINUTES] [--clients N] [--warmup MINUTES]

Starts trioserve on a free loopback port (``--port 0``) serving a small ASGI app (``/hello``,
``POST /echo``, a websocket echo on ``/ws``) and a static directory (``/static/``: a small file
and a 1 MiB one), then runs ``--clients`` threads of mixed load for MINUTES (default 10):
keep-alive GETs, range requests (single and multipart), POSTs with bodies checked on the way back,
connection churn (a new connection per request, some with ``Connection: close``), static files,
and websocket sessions. Every 10 s it samples the server's RSS (``/proc/PID/status``) and open
fds (``/proc/PID/fd``) and prints them with their growth per minute.

At the end it prints whether RSS was flat after the warm-up (its growth from the end of the
warm-up to the end, by a least-squares fit, under max(2 MiB, 5% of the RSS then): allocator
noise and caches settle, a leak of even one small object per request does not) and whether the
open fds came back to their count before the load (within 10 s of the clients closing, polled;
the server closes a connection as soon as its client does). Exit status 0 when the load saw no
error, RSS was flat and the fds came back; 1 otherwise. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

SAMPLE_EVERY = 10.0  # seconds between RSS/fd samples
# After the load stops, how long the fds get to come back to their count before it (polled).
FD_SETTLE_SECONDS = 10.0
# What "flat" allows after the warm-up: allocator noise, caches (the Date header, static file
# metadata), arenas that grew to the peak concurrency; not a per-request or per-connection leak.
FLAT_MIN_BYTES = 2 * 1024 * 1024
FLAT_FRACTION = 0.05

APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", **{k: v for k, v in message.items()
                        if k in ("text", "bytes") and v is not None}})
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    out = body if scope["path"] == "/echo" else b"hello, soak"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": out})
"""


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def done(self, kind: str) -> None:
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1

    def failed(self, kind: str, error: BaseException | str) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {error!r}")

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.ops.values())


class Server:
    """``python -m trioserve`` on a free port; stderr read in a thread so the pipe never fills."""

    def __init__(self, workdir: Path) -> None:
        static = workdir / "static"
        static.mkdir()
        (static / "small.txt").write_bytes(b"small file\n" * 20)
        self.big = random.Random(0).randbytes(1024 * 1024)
        (static / "big.bin").write_bytes(self.big)
        (workdir / "soak_app.py").write_text(APP)
        argv = [
            sys.executable, "-m", "trioserve", "--port", "0", "--no-access-log",
            "--app-dir", str(workdir), "--static", f"/static={static}", "soak_app:app",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.url = ""
        self._announced = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._announced.wait(30) or not self.url:
            self.process.kill()
            raise SystemExit("trioserve did not announce its address within 30 s")

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            match = re.search(r"serving .* on (\S+?)(?:,| \(Ctrl-C)", line)
            if match and not self.url:
                self.url = match.group(1)
                self._announced.set()
            elif "Traceback" in line or "ERROR" in line:
                print("server:", line.rstrip(), file=sys.stderr)
        self._announced.set()

    def sample(self) -> tuple[int, int]:
        """RSS in bytes and open fds of the server process."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1)) * 1024, len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def client_loop(server: Server, stats: Stats, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    url = server.url
    ws_url = "ws" + url.removeprefix("http") + "/ws"
    with httpx.Client(base_url=url, timeout=30) as keep_alive:
        while not stop.is_set():
            kind = rng.choices(
                ["get", "static", "range", "multirange", "post", "churn", "close", "ws"],
                weights=[30, 10, 10, 3, 15, 10, 5, 5],
            )[0]
            try:
                run_one(kind, keep_alive, url, ws_url, server.big, rng)
            except Exception as exc:
                stats.failed(kind, exc)
            else:
                stats.done(kind)


def run_one(
    kind: str, client: httpx.Client, url: str, ws_url: str, big: bytes, rng: random.Random
) -> None:
    if kind == "get":
        check(client.get("/hello").content == b"hello, soak", "hello body")
    elif kind == "static":
        response = client.get("/static/small.txt")
        check(response.status_code == 200 and len(response.content) == 220, "small file")
    elif kind == "range":
        start = rng.randrange(len(big) - 1)
        end = min(len(big) - 1, start + rng.randrange(1, 200_000))
        response = client.get("/static/big.bin", headers={"range": f"bytes={start}-{end}"})
        check(response.status_code == 206 and response.content == big[start : end + 1], "range")
    elif kind == "multirange":
        response = client.get("/static/big.bin", headers={"range": "bytes=0-9,100-199,-50"})
        check(
            response.status_code == 206
            and b"multipart" in response.headers.get("content-type", "").encode(),
            "multipart range",
        )
    elif kind == "post":
        body = rng.randbytes(rng.choice([0, 10, 1000, 64 * 1024, 300_000]))
        check(client.post("/echo", content=body).content == body, "echo body")
    elif kind in ("churn", "close"):
        headers = {"connection": "close"} if kind == "close" else {}
        with httpx.Client(base_url=url, timeout=30) as fresh:
            check(fresh.get("/hello", headers=headers).status_code == 200, "fresh connection")
    elif kind == "ws":
        with ws_connect(ws_url, open_timeout=30, close_timeout=10) as ws:
            for size in (1, 100, 10_000):
                payload = rng.randbytes(size)
                ws.send(payload)
                check(ws.recv(timeout=30) == payload, "websocket echo")
            ws.send("text message")
            check(ws.recv(timeout=30) == "text message", "websocket text")


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"wrong {what}")


def slope_per_minute(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 0.0 if var == 0 else cov / var * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", nargs="?", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="minutes of warm-up (default: 25%%, at least 1)"
    )
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    warmup = (args.warmup * 60) if args.warmup is not None else max(60.0, duration * 0.25)
    with tempfile.TemporaryDirectory(prefix="trioserve-soak-") as tmp:
        server = Server(Path(tmp))
        try:
            return soak(server, duration, warmup, args.clients)
        finally:
            status = server.stop()
            print(f"server exited with status {status}")


def soak(server: Server, duration: float, warmup: float, clients: int) -> int:
    rss0, fds0 = server.sample()
    print(f"trioserve pid {server.process.pid} on {server.url}: RSS {rss0 / 2**20:.1f} MiB, "
          f"{fds0} fds before load; {clients} clients for {duration / 60:g} min "
          f"(warm-up {warmup / 60:g} min)")  # fmt: skip
    stats = Stats()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(server, stats, stop, seed), daemon=True)
        for seed in range(clients)
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int, int]] = []
    last_ops = 0
    next_sample = start + SAMPLE_EVERY
    while (now := time.monotonic()) < start + duration:
        stop.wait(min(next_sample, start + duration) - now)
        if time.monotonic() < next_sample:
            continue
        next_sample += SAMPLE_EVERY
        rss, fds = server.sample()
        elapsed = time.monotonic() - start
        total = stats.total
        previous = samples[-1] if samples else (0.0, rss0, fds0)
        per_minute = 60 / max(elapsed - previous[0], 1e-9)
        samples.append((elapsed, rss, fds))
        print(
            f"{elapsed:6.0f} s  RSS {rss / 2**20:7.1f} MiB "
            f"({(rss - previous[1]) * per_minute / 2**10:+8.0f} KiB/min)  fds {fds:4d} "
            f"({(fds - previous[2]) * per_minute:+5.0f}/min)  "
            f"{(total - last_ops) / SAMPLE_EVERY:6.0f} req/s  errors {len(stats.errors)}",
            flush=True,
        )
        last_ops = total
    stop.set()
    for thread in threads:
        thread.join(60)
    # The clients have closed their connections: the server's fds must come back (polled).
    deadline = time.monotonic() + FD_SETTLE_SECONDS
    rss_end, fds_end = server.sample()
    while fds_end > fds0 and time.monotonic() < deadline:
        time.sleep(0.2)
        rss_end, fds_end = server.sample()

    after = [(t, rss) for t, rss, _ in samples if t >= warmup]
    rss_warm = after[0][1] if after else rss0
    growth = slope_per_minute(after) * (after[-1][0] - after[0][0]) / 60 if after else 0.0
    allowed = max(FLAT_MIN_BYTES, FLAT_FRACTION * rss_warm)
    flat = growth < allowed
    fds_back = fds_end <= fds0
    print()
    print(
        f"requests: {stats.total} ({', '.join(f'{k} {v}' for k, v in sorted(stats.ops.items()))})"
    )
    print(f"errors: {len(stats.errors)}")
    for error in stats.errors[:10]:
        print("  ", error)
    print(
        f"RSS: {rss0 / 2**20:.1f} MiB before, {rss_warm / 2**20:.1f} MiB after warm-up, "
        f"{rss_end / 2**20:.1f} MiB at the end; fitted growth after warm-up "
        f"{growth / 2**10:+.0f} KiB ({slope_per_minute(after) / 2**10:+.0f} KiB/min): "
        f"{'flat' if flat else 'GROWING'} (allowed {allowed / 2**10:.0f} KiB)"
    )
    print(f"fds: {fds0} before, {fds_end} after the load: {'back' if fds_back else 'NOT BACK'}")
    return 0 if flat and fds_back and not stats.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
