"""robots.txt: verdicts (tasks/robots.py) and their use by the fetcher, against loopback servers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.fetch import RobotsError, fetch_batch, fetch_document
from tasks.records import Article, SourceKind, State
from tasks.robots import MAX_BYTES, Robots, RobotsCache, Verdict, from_error, from_status
from tasks.settings import Settings
from tests.servers import Request, html, redirect, serve

PAGE = "<!doctype html><html><head><title>T</title></head><body><p>words</p></body></html>"
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """robots on (the default), loopback allowed, no delay, short timeouts, cache in tmp."""
    return Settings(allow_private_hosts=("127.0.0.1",), host_delay=0, retry_backoff=0.01,
                    raw_dir=tmp_path / "raw", deadline=5, read_timeout=1, connect_timeout=1)


def articles(*urls: str) -> list[Article]:
    return [Article(url=u, source="test", source_kind=SourceKind.URLS) for u in urls]


def outcome(results: list[Article]) -> list[tuple[State | None, str | None]]:
    return [(r.state, r.reason) for r in results]


# --- verdicts -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "verdict"), [
    (200, Verdict.RULES), (404, Verdict.ALLOW_ALL), (410, Verdict.ALLOW_ALL), (401, Verdict.ALLOW_ALL),
    (403, Verdict.ALLOW_ALL), (429, Verdict.UNAVAILABLE), (500, Verdict.UNAVAILABLE), (503, Verdict.UNAVAILABLE),
])
def test_verdict_of_a_status(status: int, verdict: Verdict) -> None:
    robots = from_status("http://a", status, b"")
    assert robots.verdict is verdict
    assert robots.fresh(ttl=100, error_ttl=0) is (verdict is not Verdict.UNAVAILABLE)


@pytest.mark.parametrize(("reason", "verdict"), [
    ("timeout", Verdict.UNAVAILABLE), ("connect-error", Verdict.UNAVAILABLE), ("deadline", Verdict.UNAVAILABLE),
    ("http-503", Verdict.UNAVAILABLE), ("http-429", Verdict.UNAVAILABLE), ("retry-after-too-long", Verdict.UNAVAILABLE),
    ("redirect-loop", Verdict.ALLOW_ALL), ("too-many-redirects", Verdict.ALLOW_ALL),
    ("private-address", Verdict.ALLOW_ALL), ("dns-error", Verdict.ALLOW_ALL), ("decode-error", Verdict.ALLOW_ALL),
])
def test_verdict_of_an_error(reason: str, verdict: Verdict) -> None:
    robots = from_error("http://a", reason)
    assert robots.verdict is verdict
    assert robots.fresh(ttl=100, error_ttl=10) and not robots.fresh(ttl=100, error_ttl=0)


def test_rules_group_delay_and_rate() -> None:
    text = ("User-agent: newsflow\nDisallow: /private\nCrawl-delay: 2\n\n"
            "User-agent: *\nDisallow: /\nRequest-rate: 1/10\n").encode()
    robots = from_status("http://a", 200, text)
    ua = Settings().user_agent  # "newsflow/0.1 (...)": matched by its product token
    assert robots.allows("http://a/news/1", ua) and not robots.allows("http://a/private/1", ua)
    assert not robots.allows("http://a/news/1", "OtherBot/1.0")
    assert robots.delay(ua) == 2 and robots.delay("OtherBot/1.0") == 10


def test_body_is_cut_at_512_kib() -> None:
    body = b"User-agent: *\n" + b"#" * MAX_BYTES + b"\nDisallow: /\n"
    robots = from_status("http://a", 200, body)
    assert len(robots.text) == MAX_BYTES and robots.allows("http://a/x", "newsflow")


def test_cache_round_trip_and_expiry(tmp_path: Path) -> None:
    cache = RobotsCache(tmp_path)
    fresh = Robots("http://a:1", Verdict.RULES, "User-agent: *\nDisallow: /x", time.time() - 50, "200")
    cache.put(fresh)
    assert cache.get("http://a:1", 60, 0) == fresh and cache.get("http://a:2", 60, 0) is None
    assert cache.get("http://a:1", 40, 100) is None  # older than the reader's TTL
    cache.put(Robots("http://a:1", Verdict.UNAVAILABLE, "", time.time() - 5, "503", from_error=True))
    assert cache.get("http://a:1", 60, 10) is not None and cache.get("http://a:1", 60, 1) is None
    (next(tmp_path.glob("*.json"))).write_text("{not json")
    assert cache.get("http://a:1", 60, 10) is None


# --- the fetcher obeys ----------------------------------------------------------------------------

def test_disallowed_url_is_skipped_without_a_request(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /private/\n"),
              "/news/1": html(PAGE), "/private/1": html(PAGE)}
    with serve(routes) as site:
        results = fetch_batch(articles(site.url("/news/1"), site.url("/private/1"), site.url("/news/1?b")),
                              settings)
    assert outcome(results) == [(None, None), (State.SKIPPED, "robots"), (None, None)]
    assert sorted(site.paths()) == ["/news/1", "/news/1", "/robots.txt"]  # robots.txt once per origin
    robots_request = site.requests[site.paths().index("/robots.txt")]
    assert robots_request.headers["user-agent"] == settings.user_agent


def test_missing_robots_allows_all(settings: Settings) -> None:
    with serve({"/a": html(PAGE)}) as site:  # /robots.txt answers 404
        [result] = fetch_batch(articles(site.url("/a")), settings)
    assert result.state is None and result.raw is not None


@pytest.mark.parametrize("status", [500, 503, 429])
def test_robots_server_error_closes_the_host_for_now(settings: Settings, status: int) -> None:
    with serve({"/robots.txt": html("down", status), "/a": html(PAGE), "/b": html(PAGE)}) as site:
        results = fetch_batch(articles(site.url("/a"), site.url("/b")), settings)
    assert outcome(results) == [(State.FAILED, "robots-unavailable")] * 2
    assert set(site.paths()) == {"/robots.txt"}  # retried like any 5xx, pages never requested


def test_robots_timeout_closes_the_host_for_now(settings: Settings) -> None:
    def hang(_: Request) -> tuple[int, dict[str, str], bytes]:
        time.sleep(3)
        return 200, TEXT, b""

    with serve({"/robots.txt": hang, "/a": html(PAGE)}) as site:
        started = time.monotonic()
        [result] = fetch_batch(articles(site.url("/a")), settings.model_copy(update={"deadline": 1.5}))
        elapsed = time.monotonic() - started
    assert outcome([result]) == [(State.FAILED, "robots-unavailable")]
    assert elapsed < 3 and "/a" not in site.paths()


def test_unavailable_verdict_is_cached_briefly(settings: Settings) -> None:
    calls = itertools.count()

    def flaky(_: Request) -> tuple[int, dict[str, str], bytes]:
        return html("down", 503) if next(calls) < 3 else (404, TEXT, b"")

    with serve({"/robots.txt": flaky, "/a": html(PAGE)}) as site:
        [first] = fetch_batch(articles(site.url("/a")), settings)
        [cached] = fetch_batch(articles(site.url("/a")), settings)  # within robots_error_ttl
        [later] = fetch_batch(articles(site.url("/a")), settings.model_copy(update={"robots_error_ttl": 0}))
    assert first.reason == cached.reason == "robots-unavailable"
    assert later.state is None  # the error had expired: fetched again, now a 404, allow all
    assert site.paths().count("/robots.txt") == 4


def test_robots_is_cached_on_disk_across_runs(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /x\n"), "/a": html(PAGE), "/x": html(PAGE)}
    with serve(routes) as site:
        fetch_batch(articles(site.url("/a")), settings)
        [again] = fetch_batch(articles(site.url("/x")), settings)  # a new session, same cache dir
        expired = settings.model_copy(update={"robots_ttl": 0})
        fetch_batch(articles(site.url("/a")), expired)
        fetch_batch(articles(site.url("/a")), expired)
    assert (again.state, again.reason) == (State.SKIPPED, "robots")
    assert site.paths().count("/robots.txt") == 3  # once, then twice more with a TTL of 0
    assert list((settings.cache_dir / "robots").glob("*.json"))


def test_crawl_delay_spaces_requests(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nCrawl-delay: 0.4\n"), "/": html(PAGE)}
    with serve(routes) as site:
        fetch_batch(articles(*(site.url(f"/?n={i}") for i in range(4))), settings.model_copy(update={"per_host": 4}))
    starts = [r.received_at for r in site.requests if r.path == "/"]
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(gaps) == 3 and min(gaps) >= 0.38, gaps


def test_crawl_delay_is_capped(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nCrawl-delay: 3600\n"), "/": html(PAGE)}
    capped = settings.model_copy(update={"crawl_delay_cap": 0.2})
    with serve(routes) as site:
        started = time.monotonic()
        results = fetch_batch(articles(*(site.url(f"/?n={i}") for i in range(3))), capped)
    assert all(r.state is None for r in results) and time.monotonic() - started < 3


def test_redirect_to_a_disallowed_origin_is_skipped(settings: Settings) -> None:
    closed = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /\n"), "/page": html(PAGE)}
    with serve(closed) as other, serve({"/go": redirect(other.url("/page"))}) as site:
        [result] = fetch_batch(articles(site.url("/go")), settings)
    assert (result.state, result.reason) == (State.SKIPPED, "robots")
    assert other.paths() == ["/robots.txt"]


def test_robots_redirect_to_a_private_address_allows_without_touching_it(settings: Settings) -> None:
    with serve({"/robots.txt": html(PAGE)}, host="127.0.0.2") as forbidden:
        with serve({"/robots.txt": redirect(forbidden.url("/robots.txt")), "/a": html(PAGE)}) as site:
            [result] = fetch_batch(articles(site.url("/a")), settings)
    assert result.state is None
    assert forbidden.requests == []


def test_endless_robots_is_read_only_to_the_cap(settings: Settings) -> None:
    def endless(_: Request) -> tuple[int, dict[str, str], Iterator[bytes]]:
        def body() -> Iterator[bytes]:
            yield b"User-agent: *\nDisallow: /x\n"
            while True:
                yield b"# " + b"a" * 65_000 + b"\n"
        return 200, TEXT, body()

    with serve({"/robots.txt": endless, "/a": html(PAGE), "/x": html(PAGE)}) as site:
        started = time.monotonic()
        ok, disallowed = fetch_batch(articles(site.url("/a"), site.url("/x")), settings)
    assert (ok.state, disallowed.reason) == (None, "robots")
    assert time.monotonic() - started < 3


def test_obey_robots_false_never_asks(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /\n"), "/a": html(PAGE)}
    with serve(routes) as site:
        [result] = fetch_batch(articles(site.url("/a")), settings.model_copy(update={"obey_robots": False}))
    assert result.state is None and site.paths() == ["/a"]


# --- feeds and sitemaps ---------------------------------------------------------------------------

FEED = (200, {"Content-Type": "application/rss+xml"},
        b"<rss version='2.0'><channel><title>t</title><item><link>http://x.example/a</link></item></channel></rss>")


def test_a_feed_or_sitemap_that_robots_disallows_is_not_fetched(settings: Settings) -> None:
    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /feeds/\n"), "/feeds/all.xml": FEED,
              "/sitemap.xml": FEED}
    with serve(routes) as site:
        with pytest.raises(RobotsError) as refused:
            fetch_document(site.url("/feeds/all.xml"), settings)
        allowed = fetch_document(site.url("/sitemap.xml"), settings)
        unchecked = fetch_document(site.url("/feeds/all.xml"), settings.model_copy(update={"obey_robots": False}))
    assert refused.value.reason == "robots"
    assert allowed.status == unchecked.status == 200
    assert site.paths() == ["/robots.txt", "/sitemap.xml", "/feeds/all.xml"]  # robots.txt read once


def test_a_source_closed_by_robots_is_recorded_with_the_reason(settings: Settings, tmp_path: Path) -> None:
    from tasks.sources import discover_sources, source_specs

    routes = {"/robots.txt": (200, TEXT, b"User-agent: *\nDisallow: /rss\n"), "/rss": FEED}
    with serve(routes) as site:
        specs = source_specs([site.url("/rss")], None, None, None, None, settings, use_defaults=False)
        discovery = discover_sources(specs, settings, tmp_path / "news.duckdb")
    [state] = discovery.states
    assert list(discovery.candidates()) == []
    assert state["last_status"] == "error" and "robots" in state["last_error"]
    assert site.paths() == ["/robots.txt"]
