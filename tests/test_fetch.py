"""tasks/fetch.py against real loopback servers (tests/servers.py); no other network."""

from __future__ import annotations

import contextlib
import gzip
import io
import ipaddress
import itertools
import os
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import brotli
import pytest
import trustme

from tasks.archive import read_raw
from tasks.fetch import (
    Document,
    FetchError,
    HTTPStatusError,
    PrivateAddressError,
    TooLargeError,
    download,
    fetch_batch,
    fetch_document,
    is_forbidden_ip,
    parse_ip_literal,
    parse_retry_after,
)
from tasks.records import Article, RawRef, SourceKind, State
from tasks.settings import Settings
from tests.servers import Request, html, redirect, serve, trickling, zeros_brotli, zeros_gzip

PAGE = "<!doctype html><html><head><meta charset=utf-8><title>T</title></head><body><p>Grüße</p></body></html>"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Loopback allowed, no politeness delay, tiny backoff, raw store and cache in tmp.

    robots.txt is off here so that request counts are those of the mechanics under test;
    tests/test_robots.py covers it.
    """
    return Settings(allow_private_hosts=("127.0.0.1",), host_delay=0, retry_backoff=0.01,
                    raw_dir=tmp_path / "raw", deadline=10, read_timeout=5, connect_timeout=2,
                    obey_robots=False)


def article(url: str) -> Article:
    return Article(url=url, source="test", source_kind=SourceKind.URLS)


def fetch_one(url: str, settings: Settings) -> Article:
    [result] = fetch_batch([article(url)], settings)
    return result


# --- successes ----------------------------------------------------------------------------------

def test_html_page_is_archived_undecoded(settings: Settings) -> None:
    body = PAGE.encode("utf-8")
    with serve({"/a": html(body, ETag='"x"')}) as site:
        result = fetch_one(site.url("/a"), settings)
    assert result.state is None and result.raw is not None
    assert (result.final_url, result.http_status, result.n_bytes) == (site.url("/a"), 200, len(body))
    assert result.content_type == "text/html; charset=utf-8"
    assert result.fetched_at is not None and result.fetched_at.tzinfo is not None
    assert result.elapsed_ms is not None and result.elapsed_ms >= 0
    raw = read_raw(result.raw)
    assert (raw.url, raw.status, raw.body) == (site.url("/a"), 200, body)
    assert raw.header("etag") == '"x"'
    assert site.requests[0].headers["user-agent"] == settings.user_agent


def test_gzip_page_is_stored_decompressed(settings: Settings) -> None:
    body = PAGE.encode()
    with serve({"/": html(gzip.compress(body), **{"Content-Encoding": "gzip"})}) as site:
        result = fetch_one(site.url("/"), settings)
    assert result.raw is not None and read_raw(result.raw).body == body


def test_stacked_encodings_are_undone_in_reverse(settings: Settings) -> None:
    body = PAGE.encode()
    wire = brotli.compress(gzip.compress(body))  # gzip applied first, then br
    with serve({"/": html(wire, **{"Content-Encoding": "gzip, br"})}) as site:
        result = fetch_one(site.url("/"), settings)
    assert result.raw is not None and read_raw(result.raw).body == body


def test_missing_content_type_is_sniffed(settings: Settings) -> None:
    with serve({"/html": (200, {}, PAGE.encode()), "/text": (200, {}, b"just words")}) as site:
        ok, other = fetch_batch([article(site.url("/html")), article(site.url("/text"))], settings)
    assert ok.state is None and ok.raw is not None
    assert (other.state, other.reason) == (State.SKIPPED, "content-type:none")


def test_done_and_warc_records_pass_through_untouched(settings: Settings) -> None:
    with serve({}) as site:
        done = article(site.url("/a")).finish(State.SKIPPED, "robots")
        warc = article(site.url("/b")).replace(raw=RawRef("x.warc.gz", 0, 10))
        assert fetch_batch([done, warc], settings) == [done, warc]
    assert site.requests == []


# --- HTTP statuses and retries ------------------------------------------------------------------

def test_404_fails_and_403_is_blocked(settings: Settings) -> None:
    with serve({"/gone": html("no", 404), "/paywall": html("no", 403)}) as site:
        gone, paywall = fetch_batch([article(site.url("/gone")), article(site.url("/paywall"))], settings)
    assert (gone.state, gone.reason, gone.http_status) == (State.FAILED, "http-404", 404)
    assert (paywall.state, paywall.reason) == (State.BLOCKED, "http-403")
    assert site.paths().count("/gone") == 1  # a 404 is not retried


def test_503_then_200_is_fetched_after_retry(settings: Settings) -> None:
    calls = itertools.count()

    def flaky(_: Request) -> tuple[int, dict[str, str], bytes]:
        return html(PAGE) if next(calls) >= 1 else html("busy", 503)

    with serve({"/": flaky}) as site:
        result = fetch_one(site.url("/"), settings)
    assert result.state is None and result.http_status == 200
    assert len(site.requests) == 2


def test_persistent_500_fails_after_three_attempts(settings: Settings) -> None:
    with serve({"/": html("oops", 500)}) as site:
        result = fetch_one(site.url("/"), settings)
    assert (result.state, result.reason) == (State.FAILED, "http-500")
    assert len(site.requests) == 3


def test_429_with_retry_after_of_a_year_fails_at_once(settings: Settings) -> None:
    with serve({"/": html("slow down", 429, **{"Retry-After": str(365 * 86400)})}) as site:
        started = time.monotonic()
        result = fetch_one(site.url("/"), settings)
    assert (result.state, result.reason) == (State.FAILED, "retry-after-too-long")
    assert time.monotonic() - started < 5
    assert len(site.requests) == 1


def test_short_retry_after_is_honoured(settings: Settings) -> None:
    calls = itertools.count()

    def limited(_: Request) -> tuple[int, dict[str, str], bytes]:
        return html(PAGE) if next(calls) else html("wait", 429, **{"Retry-After": "1"})

    with serve({"/": limited}) as site:
        result = fetch_one(site.url("/"), settings)
    assert result.http_status == 200
    gap = site.requests[1].received_at - site.requests[0].received_at
    assert gap >= 0.9


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- redirects ----------------------------------------------------------------------------------

def test_redirect_chain_of_three_is_followed(settings: Settings) -> None:
    routes = {"/1": redirect("/2", 301), "/2": redirect("/3", 307), "/3": redirect("/end"), "/end": html(PAGE)}
    with serve(routes) as site:
        result = fetch_one(site.url("/1"), settings)
    assert result.state is None
    assert (result.final_url, result.http_status) == (site.url("/end"), 200)


def test_long_redirect_chain_is_cut(settings: Settings) -> None:
    routes = {f"/{i}": redirect(f"/{i + 1}") for i in range(30)}
    with serve(routes) as site:
        result = fetch_one(site.url("/0"), settings)
    assert (result.state, result.reason) == (State.FAILED, "too-many-redirects")
    assert len(site.requests) == settings.max_redirects + 1


def test_redirect_loop_is_detected(settings: Settings) -> None:
    with serve({"/a": redirect("/b"), "/b": redirect("/a")}) as site:
        result = fetch_one(site.url("/a"), settings)
    assert (result.state, result.reason) == (State.FAILED, "redirect-loop")
    assert site.paths() == ["/a", "/b"]


def test_redirect_to_other_scheme_is_refused(settings: Settings) -> None:
    with serve({"/": redirect("ftp://example.invalid/file")}) as site:
        result = fetch_one(site.url("/"), settings)
    assert (result.state, result.reason) == (State.SKIPPED, "bad-scheme")


# --- the address guard --------------------------------------------------------------------------

@pytest.fixture
def forbidden() -> Iterator:
    """A server on 127.0.0.2, outside the allow-list: it must never see a request."""
    with serve({"/": html(PAGE)}, host="127.0.0.2") as site:
        yield site


def test_redirect_to_private_address_is_refused_before_connecting(settings: Settings, forbidden) -> None:
    with serve({"/": redirect(forbidden.url("/"))}) as site:
        result = fetch_one(site.url("/"), settings)
    assert (result.state, result.reason) == (State.SKIPPED, "private-address")
    assert forbidden.requests == []


@pytest.mark.parametrize(("spelling", "reason"), [
    ("2130706434", "private-address"), ("0x7f.0.0.2", "private-address"), ("127.2", "private-address"),
    ("[::ffff:127.0.0.2]", "private-address"), ("[::ffff:7f00:2]", "private-address"),
    ("0177.0.0.2", "bad-url"),  # httpx's URL parser itself rejects dotted octal
])
def test_ip_literal_spellings_of_a_private_address_are_refused(settings: Settings, forbidden,
                                                                spelling: str, reason: str) -> None:
    port = forbidden.base_url.rsplit(":", 1)[1]
    result = fetch_one(f"http://{spelling}:{port}/", settings)
    assert (result.state, result.reason) == (State.SKIPPED, reason)
    assert forbidden.requests == []


def test_private_host_by_name_is_refused_without_allow_list(settings: Settings, forbidden) -> None:
    port = forbidden.base_url.rsplit(":", 1)[1]
    result = fetch_one(f"http://localhost:{port}/", settings.model_copy(update={"allow_private_hosts": ()}))
    assert (result.state, result.reason) == (State.SKIPPED, "private-address")


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> None:
    """Resolve names from `table` instead of DNS (tests never leave loopback)."""
    async def resolve(host: str, port: int) -> list:
        return [ipaddress.ip_address(a) for a in table[host]]
    monkeypatch.setattr("tasks.fetch._resolve", resolve)


def test_connection_goes_to_the_vetted_ip_with_the_original_host(settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"news.example": ["127.0.0.1"]})
    with serve({"/a": html(PAGE)}) as site:
        port = site.base_url.rsplit(":", 1)[1]
        result = fetch_one(f"http://news.example:{port}/a", settings)
    assert result.state is None and result.final_url == f"http://news.example:{port}/a"
    assert site.requests[0].headers["host"] == f"news.example:{port}"


@pytest.mark.parametrize("addresses", [["127.0.0.2"], ["8.8.8.8", "127.0.0.2"], ["::ffff:127.0.0.2"]])
def test_a_name_resolving_to_any_private_address_is_refused(settings: Settings, forbidden,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            addresses: list[str]) -> None:
    fake_dns(monkeypatch, {"rebound.example": addresses})
    port = forbidden.base_url.rsplit(":", 1)[1]
    result = fetch_one(f"http://rebound.example:{port}/", settings)
    assert (result.state, result.reason) == (State.SKIPPED, "private-address")
    assert forbidden.requests == []


def test_allow_list_by_name(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"intranet.example": ["127.0.0.1"]})
    by_name = settings.model_copy(update={"allow_private_hosts": ("intranet.example",)})
    with serve({"/": html(PAGE)}) as site:
        port = site.base_url.rsplit(":", 1)[1]
        result = fetch_one(f"http://intranet.example:{port}/", by_name)
    assert result.state is None


# --- https: the certificate is checked for the site's name at the vetted address -------------------

def tls_for(ca: trustme.CA, name: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for `name`, issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


@pytest.fixture
def trusted(settings: Settings, tmp_path: Path) -> tuple[trustme.CA, Settings]:
    """A test CA, and settings that trust it (`ca_bundle`) instead of certifi's CAs."""
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ca, Settings(**{**settings.model_dump(), "ca_bundle": pem})


def test_https_checks_the_certificate_of_the_site_name_at_the_vetted_ip(trusted: tuple[trustme.CA, Settings],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The request goes to the IP that _vetted_ip chose, so without SNI and a check against the
    # URL's host name, TLS would ask for and verify a certificate for 127.0.0.1.
    ca, settings = trusted
    fake_dns(monkeypatch, {"news.example": ["127.0.0.1"]})
    with serve({"/a": html(PAGE)}, tls=tls_for(ca, "news.example")) as site:
        port = site.base_url.rsplit(":", 1)[1]
        result = fetch_one(f"https://news.example:{port}/a", settings)
    assert (result.state, result.http_status) == (None, 200)
    assert site.sni == ["news.example"]
    assert site.requests[0].headers["host"] == f"news.example:{port}"
    assert read_raw(result.raw).body == PAGE.encode()


def test_a_redirect_from_http_to_https_is_followed_and_checked(trusted: tuple[trustme.CA, Settings],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ca, settings = trusted
    fake_dns(monkeypatch, {"news.example": ["127.0.0.1"]})
    with serve({"/a": html(PAGE)}, tls=tls_for(ca, "news.example")) as secure:
        target = f"https://news.example:{secure.base_url.rsplit(':', 1)[1]}/a"
        with serve({"/a": redirect(target, 301)}) as plain:
            result = fetch_one(f"http://news.example:{plain.base_url.rsplit(':', 1)[1]}/a", settings)
    assert (result.state, result.final_url) == (None, target)
    assert secure.sni == ["news.example"] and secure.paths() == ["/a"]


@pytest.mark.parametrize("problem", ["another name", "an unknown authority"])
def test_a_certificate_that_does_not_check_out_fails_the_url_without_retries(
        trusted: tuple[trustme.CA, Settings], monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    ca, settings = trusted
    if problem == "an unknown authority":
        settings = Settings(**{**settings.model_dump(), "ca_bundle": None})  # certifi's CAs only
    fake_dns(monkeypatch, {"news.example": ["127.0.0.1"]})
    name = "other.example" if problem == "another name" else "news.example"
    with serve({"/a": html(PAGE)}, tls=tls_for(ca, name)) as site:
        port = site.base_url.rsplit(":", 1)[1]
        result = fetch_one(f"https://news.example:{port}/a", settings)
    assert (result.state, result.reason) == (State.FAILED, "tls-error")
    assert site.sni == ["news.example"]  # one handshake: a bad certificate is not retried
    assert site.requests == []


def test_a_ca_bundle_that_is_missing_or_not_pem_is_refused_by_name(settings: Settings, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"news.example": ["127.0.0.1"]})  # never reached: the session refuses first
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for path in (tmp_path / "missing.pem", junk):
        with pytest.raises(ValueError, match="ca_bundle"):
            Settings(ca_bundle=path)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="NEWSFLOW_CA_BUNDLE .*broken.pem: not a PEM file"):
        fetch_one("https://news.example/a", Settings(**{**settings.model_dump(), "ca_bundle": broken}))


@pytest.mark.parametrize(("ip", "forbidden_"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("169.254.169.254", True), ("100.64.0.1", True),
    ("0.0.0.0", True), ("224.0.0.1", True), ("255.255.255.255", True), ("::1", True), ("::", True),
    ("fe80::1", True), ("fc00::1", True), ("::ffff:127.0.0.1", True), ("64:ff9b::7f00:1", True),
    ("64:ff9b::a00:1", True), ("2002:7f00:1::", True), ("ff02::1", True),
    ("8.8.8.8", False), ("::ffff:8.8.8.8", False), ("64:ff9b::808:808", False), ("2606:4700::1111", False),
])
def test_is_forbidden_ip(ip: str, forbidden_: bool) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(ip)) is forbidden_


def test_parse_ip_literal_reads_odd_spellings() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    for spelling in ("2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f000001", "[::ffff:127.0.0.1]"):
        parsed = parse_ip_literal(spelling)
        assert parsed is not None and is_forbidden_ip(parsed), spelling
    assert parse_ip_literal("127.1") == loopback
    assert parse_ip_literal("example.com") is None and parse_ip_literal("cafe.be") is None


# --- content ------------------------------------------------------------------------------------

def test_pdf_and_binary_bodies_are_skipped(settings: Settings) -> None:
    routes = {"/pdf": (200, {"Content-Type": "application/pdf"}, b"%PDF-1.7\n..."),
              "/fake": html(b"%PDF-1.4 binary"), "/nul": html(b"<html>\x00\x01\x02\x00")}
    with serve(routes) as site:
        pdf, fake, nul = fetch_batch([article(site.url(p)) for p in ("/pdf", "/fake", "/nul")], settings)
    assert (pdf.state, pdf.reason) == (State.SKIPPED, "content-type:application/pdf")
    assert (fake.state, fake.reason) == (State.SKIPPED, "binary-body")
    assert (nul.state, nul.reason) == (State.SKIPPED, "binary-body")


def test_utf16_html_is_not_binary(settings: Settings) -> None:
    with serve({"/": html(PAGE.encode("utf-16"))}) as site:
        result = fetch_one(site.url("/"), settings)
    assert result.state is None


def test_plain_large_body_is_too_large(settings: Settings) -> None:
    small = settings.model_copy(update={"max_page_bytes": 1000})
    with serve({"/": html(b"<p>" + b"x" * 5000)}) as site:
        result = fetch_one(site.url("/"), small)
    assert (result.state, result.reason) == (State.FAILED, "too-large")


@pytest.mark.parametrize(("encoding", "bomb"), [("gzip", zeros_gzip), ("br", zeros_brotli)])
def test_decompression_bomb_stops_at_the_cap(settings: Settings, encoding: str, bomb) -> None:
    routes = {"/": lambda _: (200, {"Content-Type": "text/html", "Content-Encoding": encoding}, bomb())}
    with serve(routes) as site:
        tracemalloc.start()
        started = time.monotonic()
        result = fetch_one(site.url("/"), settings)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert (result.state, result.reason) == (State.FAILED, "too-large")
    assert elapsed < 5
    # 10 MB cap: the body buffer plus a few chunks, nowhere near the 1 GB inside
    assert peak < 3 * settings.max_page_bytes


def test_trickling_server_hits_the_deadline(settings: Settings) -> None:
    with serve({"/": trickling(60)}) as site:
        started = time.monotonic()
        result = fetch_one(site.url("/"), settings.model_copy(update={"deadline": 2}))
        elapsed = time.monotonic() - started
    assert (result.state, result.reason) == (State.FAILED, "deadline")
    assert 1.9 < elapsed < 4


# --- politeness ---------------------------------------------------------------------------------

def test_per_host_concurrency_is_bounded(settings: Settings) -> None:
    def slow(_: Request) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.2)
        return html(PAGE)

    with serve({"/": slow}) as site:
        urls = [site.url(f"/?n={i}") for i in range(8)]
        results = fetch_batch([article(u) for u in urls], settings.model_copy(update={"per_host": 2}))
    assert all(r.state is None for r in results)
    assert site.max_in_flight == 2  # reached, never exceeded


def test_connections_are_kept_alive_with_many_requests_in_flight(settings: Settings) -> None:
    # httpx's default pool closed an idle connection whenever more than 20 were open in all
    # (encode/httpcore#1000): with more in flight, nearly every request opened a new one.
    together = threading.Barrier(24, timeout=10)

    def in_waves(_: Request) -> tuple[int, dict[str, str], bytes]:
        together.wait()  # 24 requests in flight at once, then the next 24
        return html(PAGE)

    with serve({"/": in_waves}) as site:
        urls = [site.url(f"/?n={i}") for i in range(48)]
        results = fetch_batch([article(u) for u in urls],
                              settings.model_copy(update={"per_host": 24, "concurrency": 24}))
    assert all(r.state is None for r in results)
    assert len({r.client_port for r in site.requests}) == 24  # the second wave reused the first's


def test_a_connection_serves_one_site_even_when_sites_share_an_ip(settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Requests go to the vetted IP: a pool keyed by address alone would hand a connection opened
    # for one site (and, over TLS, certificate-checked for it) to another site on that address.
    fake_dns(monkeypatch, {"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]})
    with serve({"/": html(PAGE)}) as site:
        port = site.base_url.rsplit(":", 1)[1]
        urls = [f"http://{name}.example:{port}/?n={i}" for i in range(4) for name in "ab"]
        results = fetch_batch([article(u) for u in urls],  # one at a time: every request could reuse
                              settings.model_copy(update={"per_host": 1, "concurrency": 1}))
    assert all(r.state is None for r in results)
    hosts_by_connection: dict[int, set[str]] = {}
    for request in site.requests:
        hosts_by_connection.setdefault(request.client_port, set()).add(request.headers["host"])
    assert all(len(hosts) == 1 for hosts in hosts_by_connection.values()), hosts_by_connection
    assert len(hosts_by_connection) == 2  # and each site's requests reused its one connection


def open_sockets() -> int:
    """Sockets this process has open (the test server's side of each connection included)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_idle_connections_to_many_sites_are_bounded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # One pool per site: a batch over many sites, one page each, would otherwise keep a connection
    # open to every one of them until the batch ends (file descriptors run out at ~1,000 by default).
    names = [f"site{i}.example" for i in range(120)]
    fake_dns(monkeypatch, {name: ["127.0.0.1"] for name in names})
    peak = 0

    def counting(_: Request) -> tuple[int, dict[str, str], bytes]:
        nonlocal peak
        peak = max(peak, open_sockets())
        return html(PAGE)

    with serve({"/a": counting}) as site:
        port = site.base_url.rsplit(":", 1)[1]
        results = fetch_batch([article(f"http://{name}:{port}/a") for name in names],
                              settings.model_copy(update={"concurrency": 8, "per_host": 1}))
    assert all(r.state is None for r in results)
    # Each connection is two sockets here (client and server side): 8 in flight and the pools of
    # the 16 sites used last (2 x concurrency), against ~240 if every site's connection stayed open.
    assert peak <= 2 * (8 + 16) + 8, peak


def test_waiting_for_a_host_slot_does_not_count_against_the_deadline(settings: Settings) -> None:
    def slow(_: Request) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.6)
        return html(PAGE)

    with serve({"/": slow}) as site:
        urls = [site.url(f"/?n={i}") for i in range(3)]  # one at a time: the last waits ~1.2 s
        results = fetch_batch([article(u) for u in urls],
                              settings.model_copy(update={"per_host": 1, "deadline": 1.0}))
    assert [r.state for r in results] == [None, None, None]


def test_request_starts_to_one_host_are_spaced(settings: Settings) -> None:
    with serve({"/": html(PAGE)}) as site:
        urls = [site.url(f"/?n={i}") for i in range(4)]
        fetch_batch([article(u) for u in urls], settings.model_copy(update={"host_delay": 0.2, "per_host": 4}))
    starts = sorted(r.received_at for r in site.requests)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3 and min(gaps) >= 0.18, gaps


# --- documents and downloads --------------------------------------------------------------------

def test_fetch_document_returns_feeds_and_304(settings: Settings) -> None:
    def conditional(req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("if-none-match") == '"v1"':
            return 304, {"ETag": '"v1"'}, b""
        return 200, {"Content-Type": "application/rss+xml", "ETag": '"v1"'}, b"<rss/>"

    with serve({"/feed": conditional, "/old": redirect("/feed", 301)}) as site:
        doc = fetch_document(site.url("/old"), settings)
        again = fetch_document(site.url("/feed"), settings, headers={"If-None-Match": '"v1"'})
    assert doc == Document(site.url("/old"), site.url("/feed"), 200, doc.headers, b"<rss/>")
    assert doc.header("etag") == '"v1"'
    assert (again.status, again.body) == (304, b"")


def test_fetch_document_raises_on_errors(settings: Settings, forbidden) -> None:
    with serve({"/missing": html("no", 404), "/bad": redirect(forbidden.url("/"))}) as site:
        with pytest.raises(HTTPStatusError) as missing:
            fetch_document(site.url("/missing"), settings)
        with pytest.raises(PrivateAddressError):
            fetch_document(site.url("/bad"), settings)
    assert (missing.value.reason, missing.value.status) == ("http-404", 404)
    assert forbidden.requests == []


def test_download_streams_to_a_file(settings: Settings) -> None:
    chunks = [bytes([i]) * 100_000 for i in range(20)]
    with serve({"/big.warc.gz": lambda _: (200, {"Content-Type": "application/octet-stream"}, iter(chunks))}) as site:
        dest = io.BytesIO()
        download(site.url("/big.warc.gz"), dest, settings, max_bytes=10_000_000)
        with pytest.raises(TooLargeError):
            download(site.url("/big.warc.gz"), io.BytesIO(), settings, max_bytes=1_000_000)
    assert dest.getvalue() == b"".join(chunks)
    assert site.requests[0].headers["accept-encoding"] == "identity"


def test_connection_refused_is_a_connect_error(settings: Settings) -> None:
    with serve({}) as site:
        url = site.url("/")
    # the server is gone: nothing listens on that port any more
    result = fetch_one(url, settings)
    assert (result.state, result.reason) == (State.FAILED, "connect-error")


def test_fetch_error_reasons_are_short() -> None:
    assert FetchError("timeout").reason == "timeout"
    assert HTTPStatusError(401).state is State.BLOCKED and HTTPStatusError(503).transient
    assert not HTTPStatusError(404).transient and HTTPStatusError(404).state is State.FAILED


# --- re-driving transient failures (tasks/load.py retry_candidates) --------------------------------

def test_retry_candidates_are_urls_whose_last_state_was_transient(tmp_path: Path) -> None:
    from tasks.fetch import TRANSIENT_REASONS
    from tasks.load import load_batch, retry_candidates, start_run

    db = tmp_path / "news.duckdb"
    settings = Settings(db=db, raw_dir=tmp_path / "raw")
    assert retry_candidates(None, settings) == []  # no database yet

    def run(run_id: str, outcomes: dict[str, tuple[State, str]]) -> None:
        start_run(db, run_id, "ingest", {})
        load_batch(db, run_id, [article(f"http://a.example/{u}").finish(*o) for u, o in outcomes.items()])
        time.sleep(0.01)  # recorded_at orders the runs

    run("r1", {"timeout": (State.FAILED, "timeout"), "fixed": (State.FAILED, "http-503"),
               "gone": (State.FAILED, "http-404"), "robots": (State.FAILED, "robots-unavailable")})
    run("r2", {"fixed": (State.SKIPPED, "content-type:application/pdf"), "later": (State.FAILED, "deadline"),
               "blocked": (State.BLOCKED, "http-403")})
    found = retry_candidates(db, settings)
    assert [r.url.rsplit("/", 1)[1] for r in found] == ["later", "robots", "timeout"]
    assert all(r.source == "test" and r.state is None for r in found)
    assert {"timeout", "connect-error", "deadline", "http-429", "http-503", "robots-unavailable",
            "retry-after-too-long"} <= TRANSIENT_REASONS and "http-404" not in TRANSIENT_REASONS
