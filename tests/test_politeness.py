"""Per-host pacing measured at the server: spacing of request starts and requests in flight,
within one process and across two concurrent processes sharing the cache directory."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tasks.pacing import Pacer, host_key
from tests.conftest import REPO
from tests.servers import Request, Server, html, serve

PAGE = "<!doctype html><html><head><title>T</title></head><body><p>words</p></body></html>"
DELAY = 0.4
PER_HOST = 2
SERVICE = 0.9  # seconds a request takes: without the slot limit 3 would overlap at DELAY spacing
# The server stamps a request when its handler thread has parsed it: a new connection (accept,
# thread start) is stamped a few tens of ms later than one on a kept-alive connection on this
# loaded 2-core machine, so single gaps may look that much shorter than they were on the wire.
JITTER = 0.06

# A child process: import, say ready, wait for "go" on stdin, fetch the URLs, print the outcomes.
CHILD = """
import json, sys
from tasks.fetch import fetch_batch
from tasks.records import Article, SourceKind
from tasks.settings import Settings
urls = json.loads(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
records = [Article(url=u, source="t", source_kind=SourceKind.URLS) for u in urls]
print(json.dumps([[r.state, r.reason] for r in fetch_batch(records, Settings())]), flush=True)
"""


def slow(_: Request) -> tuple[int, dict[str, str], bytes]:
    time.sleep(SERVICE)
    return html(PAGE)


def gaps(server: Server) -> list[float]:
    starts = sorted(r.received_at for r in server.requests)
    return [b - a for a, b in itertools.pairwise(starts)]


def child_env(tmp_path: Path, name: str) -> dict[str, str]:
    return {**os.environ, "NEWSFLOW_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "NEWSFLOW_HOST_DELAY": str(DELAY),
            "NEWSFLOW_PER_HOST": str(PER_HOST), "NEWSFLOW_RAW_DIR": str(tmp_path / name / "raw"),
            "NEWSFLOW_CACHE_DIR": str(tmp_path / "cache"),  # shared: this is what makes them agree
            "PYTHONPATH": str(REPO)}


def test_two_processes_share_one_hosts_budget(tmp_path: Path) -> None:
    with serve({"/": slow, "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")}) as site:
        children = []
        for name in ("a", "b"):
            urls = [site.url(f"/?{name}={i}") for i in range(6)]
            children.append(subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(urls)], cwd=REPO, env=child_env(tmp_path, name),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for child in children:  # both imported: start them together
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    for out in outputs:
        assert json.loads(out.strip().splitlines()[-1]) == [[None, None]] * 6
    pages = [r for r in site.requests if r.path == "/"]
    assert len(pages) == 12
    first_b = min(i for i, r in enumerate(pages) if r.query[0] == "b")
    last_a = max(i for i, r in enumerate(pages) if r.query[0] == "a")
    assert first_b < last_a, [r.query for r in pages]  # taking turns: neither run starves the other
    spacing = gaps(site)  # robots.txt requests included
    assert min(spacing) >= DELAY - JITTER, spacing
    assert sorted(spacing)[len(spacing) // 2] >= DELAY, spacing
    assert site.max_in_flight == PER_HOST  # reached, never exceeded


def test_two_pacers_on_one_directory_behave_as_one(tmp_path: Path) -> None:
    """Two Pacer objects stand for two processes: flock conflicts between descriptors, not processes."""
    first, second = Pacer(tmp_path, per_host=2), Pacer(tmp_path, per_host=2)
    starts: list[float] = []
    in_flight = peak = 0

    async def request(pacer: Pacer) -> None:
        nonlocal in_flight, peak
        async with pacer.slot("news.example"):
            await pacer.space("news.example", 0.05)
            starts.append(time.monotonic())
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.15)
            in_flight -= 1

    async def main() -> None:
        await asyncio.gather(*(request(p) for p in (first, second) * 4))

    asyncio.run(main())
    spacing = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert peak == 2 and min(spacing) >= 0.045, spacing


def test_many_hosts_proceed_in_parallel(tmp_path: Path) -> None:
    pacer = Pacer(tmp_path, per_host=1)

    async def request(host: str) -> None:
        async with pacer.slot(host):
            await pacer.space(host, 5.0)  # a long delay only matters between starts to one host
            await asyncio.sleep(0.1)

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(request(f"h{i}.example") for i in range(50))), 10)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2


def test_stale_reservation_far_in_the_future_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f"{host_key('news.example')}.last").write_text(str(time.time() + 86400))
    pacer = Pacer(tmp_path, per_host=1)

    async def request() -> None:
        async with pacer.slot("news.example"):
            await pacer.space("news.example", 0.1)

    started = time.monotonic()
    asyncio.run(request())
    assert time.monotonic() - started < 1


def test_host_keys_are_safe_file_names() -> None:
    assert host_key("News.Example.") == host_key("news.example")
    assert "/" not in host_key("../../etc/passwd") and host_key("a") != host_key("b")
