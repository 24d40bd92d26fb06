"""Polite, bounded, SSRF-safe HTTP: article pages into the raw store, feeds/sitemaps/WARCs to callers.

Every request, on every redirect hop, goes through the same rules:

* only http/https; redirects followed by hand, at most `max_redirects`, loops refused;
* the host is resolved first and refused if ANY address is not public (loopback, private,
  link-local, reserved, multicast, unspecified; IPv4 inside IPv4-mapped, IPv4-compatible,
  NAT64 and 6to4 IPv6 addresses; odd IPv4 spellings like `2130706433` or `0x7f.1`), unless
  the name or address is in `settings.allow_private_hosts`; then the connection goes to
  that vetted IP (URL host rewritten, `Host` header and TLS SNI kept), so DNS rebinding
  cannot swap the address between the check and the connect;
* bodies are decompressed here, not by httpx, and counted while streaming, so a
  decompression bomb stops at the cap;
* a total deadline per URL (`settings.deadline`, covering DNS, redirects, retries and
  body; not the politeness waits), on top of httpx's connect/read timeouts;
* per-host pacing that holds across processes (tasks/pacing.py): at most `per_host` requests in
  flight and starts at least `host_delay` apart (raised by the site's robots.txt `Crawl-delay`,
  up to `crawl_delay_cap`); at most `concurrency` requests in flight in all;
* article pages only: every hop is checked against its origin's robots.txt (tasks/robots.py),
  itself fetched by these same rules (capped at 512 KiB) and cached on disk for `robots_ttl`.
* connections are kept alive per site (scheme and Host), never shared between sites that
  resolve to one IP; the pools of the 2 x `concurrency` sites used last stay open (`_SitePools`).

Exceptions (`reason` is what lands in the `fetches.reason` column)::

    FetchError(reason)                        state failed unless noted
     ├── RefusedError                         state skipped: we chose not to fetch or keep it
     │    ├── PrivateAddressError             private-address
     │    ├── BadURLError                     bad-url, bad-scheme
     │    ├── ContentTypeError                content-type:<mime>, content-type:none, binary-body
     │    └── RobotsError                     robots
     ├── HTTPStatusError(status)              http-<status>; state blocked for 401/402/403;
     │                                        transient for 429/500/502/503/504
     ├── TransientError                       timeout, connect-error, protocol-error (retried)
     ├── RedirectError                        too-many-redirects, redirect-loop
     ├── NotModifiedError                     not-modified (state skipped): a revisit's copy is current
     ├── TooLargeError                        too-large (after decompression)
     ├── DeadlineError                        deadline
     └── FetchError itself                    tls-error, dns-error, bad-encoding, decode-error,
                                              retry-after-too-long, robots-unavailable

Retries: transient failures get at most `MAX_ATTEMPTS` attempts, with exponential backoff and
jitter from `settings.retry_backoff`, or the server's `Retry-After` (seconds or HTTP date) when
it is at most `settings.retry_after_cap`; a longer one fails at once (`retry-after-too-long`).

The reason vocabulary of `fetches` (state: reason), every stage; `SELECT state, reason, count(*)
FROM fetches GROUP BY ALL` groups on it. `*` marks TRANSIENT_REASONS, which
`newsflow ingest --retry-failed` re-drives (tasks/load.py `retry_candidates`):

    skipped      robots                  robots.txt disallows the URL for our User-Agent
                 not-modified            (revisit) 304 to a conditional GET: the stored copy is current
                 private-address         a hop resolves to a non-public address (SSRF guard)
                 bad-url, bad-scheme     not an absolute http(s) URL, or a redirect elsewhere
                 content-type:<mime>     declared non-HTML (content-type:application/pdf ...)
                 content-type:none       no Content-Type and the body does not look like HTML
                 binary-body             binary bytes served as HTML
                 too-large               (extract) archived page over max_page_bytes
    blocked      http-401/402/403        the publisher refused us
    failed       http-<status>           404, 410, other 4xx/5xx (http-429/500/502/503/504 *)
                 timeout *               connect or read timed out on every attempt
                 connect-error *         refused or reset connection
                 protocol-error *        malformed or truncated HTTP response
                 deadline *              the total per-URL deadline ran out (trickling server)
                 retry-after-too-long *  429/503 asking for longer than retry_after_cap
                 robots-unavailable *    robots.txt answered 429/5xx or timed out: host not crawled now
                 too-many-redirects      more than max_redirects hops
                 redirect-loop           a URL met twice in one redirect chain
                 too-large               over max_page_bytes after decompression (bombs)
                 tls-error, dns-error    certificate or name resolution failed
                 bad-encoding            a Content-Encoding we do not decode (zstd, compress...)
                 decode-error            a corrupt gzip/deflate/brotli stream
                 extract-timeout         (extract) over extract_timeout, e.g. very deep nesting
                 extract-error:<Exc>     (extract) the extractor crashed on the page
    not_article  no-text, too-short      (extract) no main text, or fewer than min_words
    duplicate    url-seen, same-content, in-run   (dedupe) already loaded, or twice in this run
    loaded       (no reason)

Feeds and sitemaps that fail as a whole (billion laughs, XXE, not a feed) are no URLs: they
show in `sources.last_status`/`last_error` (tasks/sources.py).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import re
import socket
import ssl
import sys
import zlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import BinaryIO, TypeVar

import brotli
import httpx

from tasks.archive import RawWriter, raw_writer
from tasks.pacing import Pacer
from tasks.records import Article, State
from tasks.robots import MAX_BYTES as ROBOTS_MAX_BYTES
from tasks.robots import Robots, RobotsCache, Verdict, from_error, from_status
from tasks.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ATTEMPTS = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BLOCKED_STATUSES = frozenset({401, 402, 403})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
ARTICLE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"
# Only what we can decode with a bounded output; httpx would also offer zstd when installed.
ACCEPT_ENCODING = "gzip, deflate, br"
_CHUNK = 64 * 1024  # most decompressed bytes produced per step
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Failures worth trying again on a later run (`newsflow ingest --retry-failed`).
TRANSIENT_REASONS = frozenset({
    "timeout", "connect-error", "protocol-error", "deadline", "retry-after-too-long",
    "robots-unavailable", *(f"http-{s}" for s in RETRY_STATUSES),
})


# --- exceptions -------------------------------------------------------------------------------

class FetchError(Exception):
    """A URL could not be fetched; `reason` is short, lowercase and groupable."""

    state: State = State.FAILED
    transient: bool = False

    def __init__(self, reason: str, *, url: str | None = None, status: int | None = None,
                 content_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.url, self.status, self.content_type = url, status, content_type


class RefusedError(FetchError):
    state = State.SKIPPED


class PrivateAddressError(RefusedError):
    def __init__(self, host: str) -> None:
        super().__init__("private-address")
        self.host = host


class BadURLError(RefusedError):
    pass


class ContentTypeError(RefusedError):
    pass


class RobotsError(RefusedError):
    def __init__(self, url: str) -> None:
        super().__init__("robots", url=url)


class HTTPStatusError(FetchError):
    def __init__(self, status: int, *, url: str | None = None, retry_after: float | None = None,
                 content_type: str | None = None) -> None:
        super().__init__(f"http-{status}", url=url, status=status, content_type=content_type)
        self.state = State.BLOCKED if status in BLOCKED_STATUSES else State.FAILED
        self.transient = status in RETRY_STATUSES
        self.retry_after = retry_after


class TransientError(FetchError):
    transient = True


class RedirectError(FetchError):
    pass


NOT_MODIFIED = "not-modified"


class NotModifiedError(FetchError):
    """304 Not Modified to a conditional GET (a revisit): the stored copy is the page."""

    state = State.SKIPPED

    def __init__(self, url: str) -> None:
        super().__init__(NOT_MODIFIED, url=url, status=304)


class TooLargeError(FetchError):
    def __init__(self) -> None:
        super().__init__("too-large")


class DeadlineError(FetchError):
    def __init__(self) -> None:
        super().__init__("deadline")


# --- public API -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Document:
    """A fetched feed/sitemap/robots/WARC body (not an article page)."""

    url: str
    final_url: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def fetch_document(url: str, settings: Settings, headers: dict[str, str] | None = None,
                   *, max_bytes: int | None = None) -> Document:
    """GET a feed or sitemap under the fetch rules; 2xx and 304 are returned, anything else raises."""
    limit = max_bytes or settings.max_page_bytes
    return asyncio.run(_one_off(settings, lambda s, d: _get_document(s, url, headers or {}, d, limit)))


def download(url: str, dest: BinaryIO, settings: Settings, max_bytes: int) -> None:
    """Stream a large body (a WARC file) into `dest`; on error `dest` may hold a partial body.

    No total deadline (a 1 GB file may rightly take minutes); the read timeout still catches stalls.
    """
    asyncio.run(_one_off(settings, lambda s, d: _download(s, url, dest, max_bytes, d), deadline=False))


async def fetch_articles(records: list[Article], settings: Settings, writer: RawWriter) -> list[Article]:
    """Fetch every pending record's page into `writer`; each comes back fetched or finished."""

    async def one(record: Article) -> Article:
        if record.done or record.raw is not None:
            return record
        return await _fetch_article(session, record, writer)

    async with _session(settings) as session:
        return list(await asyncio.gather(*(one(r) for r in records)))


def fetch_batch(records: list[Article], settings: Settings) -> list[Article]:
    """Fetch a batch into a new WARC file of the raw store."""
    if all(r.done or r.raw is not None for r in records):
        return records  # no empty WARC file for a batch with nothing to fetch
    with raw_writer(settings.raw_dir) as writer:
        return asyncio.run(fetch_articles(records, settings, writer))


def is_forbidden_ip(ip: IP) -> bool:
    """True unless `ip` is a public unicast address (embedded IPv4 judged on its own)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_forbidden_ip(embedded)
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_reserved or ip.is_multicast or ip.is_unspecified)


def parse_ip_literal(host: str) -> IP | None:
    """`host` as an IP address if it is one in any spelling a resolver accepts (`127.1`, `0x7f.1`)."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # ipaddress only reads dotted quads; inet_aton reads the shorthand, hex and octal forms
    # that getaddrinfo (and browsers) also accept, which is how `http://0x7f.1/` reaches loopback.
    if re.fullmatch(r"[0-9a-fx.]+", host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --- articles ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Page:
    url: str
    status: int
    reason_phrase: str
    headers: list[tuple[str, str]]
    content_type: str | None
    body: bytes
    elapsed_ms: int


async def _fetch_article(session: _Session, record: Article, writer: RawWriter) -> Article:
    """The record fetched and archived, or finished with the reason it could not be."""
    try:
        conditional = conditional_headers(record.hints.etag, record.hints.last_modified)
        page = await _with_deadline(session, lambda d: _get_page(session, record.url, d, conditional))
    except FetchError as exc:
        log.debug("fetch %s: %s", record.url, exc.reason)
        return record.replace(final_url=exc.url, http_status=exc.status,
                              content_type=exc.content_type).finish(exc.state, exc.reason)
    fetched_at = datetime.now(UTC)
    raw = writer.write(page.url, page.status, page.reason_phrase, page.headers, page.body, fetched_at)
    return record.replace(final_url=page.url, http_status=page.status, fetched_at=fetched_at,
                          elapsed_ms=page.elapsed_ms, n_bytes=len(page.body),
                          content_type=page.content_type, raw=raw)


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """The headers of a conditional GET for a document whose earlier response gave these validators
    (a feed polled again, a revisit); none for a value that is not a plain header value."""
    headers = {"If-None-Match": etag, "If-Modified-Since": last_modified}
    return {k: v for k, v in headers.items() if v and v.isascii() and v.isprintable()}


async def _get_page(session: _Session, url: str, deadline: asyncio.Timeout | None,
                    conditional: dict[str, str] | None = None) -> _Page:
    """One attempt at an article page: HTML only, capped. With `conditional` headers, a 304 is
    `NotModifiedError`."""
    async with _follow(session, url, {"Accept": ARTICLE_ACCEPT, **(conditional or {})}, deadline,
                       robots=session.settings.obey_robots) as (response, final):
        content_type = response.headers.get("content-type")
        if response.status_code == 304 and conditional:
            raise NotModifiedError(final)
        if not 200 <= response.status_code < 300:
            raise _status_error(response, final)
        _check_declared_type(content_type, final)
        body = await _read_body(response, session.settings.max_page_bytes)
    _check_body(body, content_type, final)
    return _Page(final, response.status_code, response.reason_phrase, response.headers.multi_items(),
                 content_type, body, int(response.elapsed.total_seconds() * 1000))


def _mime(content_type: str | None) -> str | None:
    """`text/html` from `text/html; charset=utf-8`; None when absent or empty."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime or None


def _check_declared_type(content_type: str | None, url: str) -> None:
    """Refuse before reading the body when the server says it is not HTML."""
    mime = _mime(content_type)
    if mime is not None and mime not in HTML_TYPES:
        raise ContentTypeError(f"content-type:{mime}", url=url, status=200, content_type=content_type)


# WHATWG MIME sniffing's "HTML" patterns: a tag name followed by a space or '>'. Hand-written
# because the sniffing libraries (python-magic, filetype) need libmagic or only know binaries.
_HTML_SNIFF = re.compile(
    rb"<(!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--)[ >\t\r\n]",
    re.IGNORECASE)
_BINARY_MAGIC = (b"%PDF-", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 HTML is full of NUL bytes yet is text


def _check_body(body: bytes, content_type: str | None, url: str) -> None:
    """Refuse a binary body, and a body without Content-Type that does not look like HTML."""
    head = body[:1024]
    if head.startswith(_BINARY_MAGIC) or (b"\x00" in head and not head.startswith(_UTF16_BOMS)):
        raise ContentTypeError("binary-body", url=url, status=200, content_type=content_type)
    if _mime(content_type) is None and not _HTML_SNIFF.match(head.lstrip(b"\xef\xbb\xbf \t\r\n")):
        raise ContentTypeError("content-type:none", url=url, status=200, content_type=content_type)


# --- documents and downloads ------------------------------------------------------------------

async def _get_document(session: _Session, url: str, headers: dict[str, str],
                        deadline: asyncio.Timeout | None, max_bytes: int) -> Document:
    """One attempt at a feed/sitemap: any 2xx or a 304. robots.txt rules feeds and sitemaps as it
    rules pages (a site may close its feeds to crawlers and not its pages)."""
    async with _follow(session, url, headers, deadline, robots=session.settings.obey_robots) as (response, final):
        if not (200 <= response.status_code < 300 or response.status_code == 304):
            raise _status_error(response, final)
        body = await _read_body(response, max_bytes)
    return Document(url, final, response.status_code, tuple(response.headers.multi_items()), body)


async def _download(session: _Session, url: str, dest: BinaryIO, max_bytes: int,
                    deadline: asyncio.Timeout | None) -> None:
    """One attempt at streaming `url` into `dest`; failures after the first byte are not retried."""
    async with _follow(session, url, {"Accept-Encoding": "identity"}, deadline) as (response, final):
        if not 200 <= response.status_code < 300:
            raise _status_error(response, final)
        try:
            async for piece in _stream_body(response, max_bytes):
                dest.write(piece)
        except FetchError as exc:
            exc.transient = False  # part of the body is already in `dest`
            raise


# --- requests, redirects and the address guard ------------------------------------------------

@dataclass
class _Session:
    client: httpx.AsyncClient
    settings: Settings
    pacer: Pacer
    limit: asyncio.Semaphore  # requests in flight, all hosts together (`concurrency`)
    robots_cache: RobotsCache
    robots: dict[str, asyncio.Future[Robots]] = field(default_factory=dict)  # by origin


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[_Session]:
    """One client for a whole batch: pooled connections, our headers, no redirects, no cookies."""
    timeout = httpx.Timeout(connect=settings.connect_timeout, read=settings.read_timeout,
                            write=settings.read_timeout, pool=settings.connect_timeout)
    # Cookies would be filed under the pinned IP, not the site, and leak between sites on one IP.
    cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    # One connection pool per site (_SitePools). httpcore closes an idle connection whenever its
    # pool holds more connections in all (not idle ones: encode/httpcore#1000) than
    # max_keepalive_connections, 20 by default; with more requests in flight than that, nearly
    # every response closed its connection and the next request to that host opened a new one:
    # 196-198 connections for 200 pages of 20 hosts (bench/corpus.py's site). A site has at most
    # `per_host` requests in flight, so room for those and as many idle connections keeps them
    # alive; beyond that the idle ones go, as intended.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=2 * max(settings.per_host, 1))
    async with httpx.AsyncClient(
        transport=_SitePools(limits, max_sites=max(2 * settings.concurrency, 16), tls=_tls_context(settings.ca_bundle)),
        timeout=timeout,
        follow_redirects=False, trust_env=False, cookies=cookies, headers={"User-Agent": settings.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
    ) as client:
        yield _Session(client, settings, Pacer(settings.cache_dir / "hosts", settings.per_host),
                       asyncio.Semaphore(settings.concurrency), RobotsCache(settings.cache_dir / "robots"))


@functools.cache
def _tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The process's TLS settings, built once per CA bundle: building one loads the bundle (~30 ms,
    blocking the event loop), and each batch's session used to build its own. An SSLContext is
    safe to share between connections and threads; it holds no per-connection state.

    certifi's CAs, or those of `ca_bundle` (`Settings.ca_bundle`) instead, loaded as httpx loads
    a CA file. Either way certificates are checked against the URL's host name, which is sent as
    SNI although the connection goes to the address `_vetted_ip` chose (see `_hop`)."""
    if ca_bundle is None:
        return httpx.create_ssl_context(trust_env=False)
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except ssl.SSLError as exc:  # a misconfiguration: the run stops here, saying which setting
        raise ValueError(f"NEWSFLOW_CA_BUNDLE {ca_bundle}: not a PEM file of CA certificates ({exc})") from exc


class _SitePools(httpx.AsyncBaseTransport):
    """One connection pool per site (scheme and Host), for the `max_sites` sites used last.

    Requests go to IP-literal URLs (the address vetted by `_vetted_ip`), so one pool for all
    would reuse a connection made, and certificate-checked, for one site for another site on the
    same IP. And httpcore's pool walks all its connections for every request it assigns, polling
    each idle socket (`has_expired`): with one pool for a batch's 20 hosts that was ~15% of the
    fetching process's samples (py-spy, `ingest` of 5,000 loopback pages). A site's pool holds a
    few connections.

    Idle connections stay open until their pool closes (httpcore has no reaper), so a batch over
    many sites would hold one to each of them: the pool of the site used longest ago, with no
    response open, is closed when a new site needs one beyond `max_sites`.
    """

    def __init__(self, limits: httpx.Limits, max_sites: int, tls: ssl.SSLContext) -> None:
        self._tls = tls
        self._limits, self._max_sites = limits, max(1, max_sites)
        self._pools: OrderedDict[tuple[str, str], httpx.AsyncHTTPTransport] = OrderedDict()  # least recent first
        self._open: Counter[tuple[str, str]] = Counter()  # responses not closed yet, per site

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.scheme, request.headers.get("host", ""))
        closing = []
        if key not in self._pools:
            # Taken out before any await, so concurrent requests never see a pool being closed.
            closing = self._evict_idle()
            self._pools[key] = httpx.AsyncHTTPTransport(verify=self._tls, trust_env=False, limits=self._limits)
        self._pools.move_to_end(key)
        pool = self._pools[key]
        self._open[key] += 1  # before any await: this site's pool is not idle from here on
        try:
            for idle in closing:
                await idle.aclose()
            response = await pool.handle_async_request(request)
        except BaseException:
            self._open[key] -= 1
            raise
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_Closing(response.stream, lambda: self._open.subtract([key])))

    def _evict_idle(self) -> list[httpx.AsyncHTTPTransport]:
        """Take out the least recently used pools with no open response until a new one fits."""
        evicted = []
        for key in list(self._pools):
            if len(self._pools) < self._max_sites:
                break
            if self._open[key] <= 0:
                evicted.append(self._pools.pop(key))
                del self._open[key]
        return evicted

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()


class _Closing(httpx.AsyncByteStream):
    """A response body that calls `on_close` once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, on_close: Callable[[], object]) -> None:
        self._stream, self._on_close = stream, on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None


@asynccontextmanager
async def _follow(session: _Session, url: str, headers: dict[str, str], deadline: asyncio.Timeout | None,
                  *, robots: bool = False) -> AsyncIterator[tuple[httpx.Response, str]]:
    """The last response of `url`'s redirect chain (body not yet read) and its URL; every hop vetted.

    With `robots`, every hop must also be allowed by its origin's robots.txt.
    """
    seen = {_without_fragment(url)}
    for _ in range(session.settings.max_redirects + 1):
        if robots:
            async with _paused(deadline):  # like the pacing waits: politeness, not the server
                await _check_robots(session, url)
        async with _hop(session, url, headers, deadline) as response:
            if not response.has_redirect_location:  # 301/302/303/307/308 with a Location
                yield response, url
                return
            location = response.headers["location"]
        url = _next_url(url, location, seen)
    raise RedirectError("too-many-redirects", url=url)


@asynccontextmanager
async def _hop(session: _Session, url: str, headers: dict[str, str],
               deadline: asyncio.Timeout | None) -> AsyncIterator[httpx.Response]:
    """One request to a vetted address, holding a slot of its host until the body is read."""
    target = _parse_url(url)
    host = target.raw_host.decode("ascii")
    ip = await _vetted_ip(host, target.port or (443 if target.scheme == "https" else 80), session.settings)
    delay = _host_delay(session, url)

    async def trace(event: str, info: dict[str, object]) -> None:
        # The host's spacing is claimed as the request headers go out (httpcore's documented
        # "trace" extension), after connecting: a slow TCP/TLS connect, or httpcore's lazy imports
        # on a process's first request, must not shorten the gap to the next start.
        if event.endswith("send_request_headers.started"):
            async with _paused(deadline):
                await session.pacer.space(host, delay)

    extensions: dict[str, object] = {"trace": trace}
    if target.scheme == "https":
        extensions["sni_hostname"] = host
    request = session.client.build_request(
        "GET", target.copy_with(host=ip), headers={**headers, "Host": target.netloc.decode("ascii")},
        extensions=extensions,
    )
    async with _turn(session, host, deadline):
        try:
            response = await session.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _transport_error(exc, url) from exc
        try:
            yield response
        finally:
            await response.aclose()


def _parse_url(url: str) -> httpx.URL:
    """`url` parsed, if it is an absolute http(s) URL with a host."""
    try:
        parsed = _parsed(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BadURLError("bad-url", url=url) from exc
    if parsed.scheme not in ("http", "https"):
        raise BadURLError("bad-scheme", url=url)
    if not parsed.raw_host:
        raise BadURLError("bad-url", url=url)
    return parsed


# A page's URL is parsed for its robots.txt origin, its host's pacing and its request: three
# parses of the same string, each walking it character by character in Python (httpx's
# urlparse). One parse for all three took the fetching process from 3.6-3.8 to 3.2-3.6 ms of CPU
# a page (2,000 pages of the bench's loopback site). httpx.URL is immutable, so sharing it is
# safe; bounded to a few batches' URLs.
_parsed = functools.lru_cache(maxsize=4096)(httpx.URL)


def _next_url(url: str, location: str, seen: set[str]) -> str:
    """Where a redirect from `url` leads, refusing loops (a URL met twice in one chain)."""
    try:
        nxt = str(httpx.URL(url).join(location.strip()))
    except httpx.InvalidURL as exc:
        raise BadURLError("bad-url", url=url) from exc
    key = _without_fragment(nxt)
    if key in seen:
        raise RedirectError("redirect-loop", url=nxt)
    seen.add(key)
    return nxt


def _without_fragment(url: str) -> str:
    return url.split("#", 1)[0]


async def _vetted_ip(host: str, port: int, settings: Settings) -> str:
    """The address to connect to for `host`, refusing hosts with any non-public address."""
    allowed = {h.lower().rstrip(".") for h in settings.allow_private_hosts}
    literal = parse_ip_literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    if host.lower().rstrip(".") not in allowed:
        if any(is_forbidden_ip(a) and str(a) not in allowed for a in addresses):
            raise PrivateAddressError(host)
    return str(addresses[0])


async def _resolve(host: str, port: int) -> list[IP]:
    """All addresses of `host`, in resolver order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError("dns-error") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise FetchError("dns-error")
    return list(dict.fromkeys(addresses))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or int(ip) >> 32 == 0:  # 64:ff9b::a.b.c.d, ::a.b.c.d (and ::, ::1)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _status_error(response: httpx.Response, url: str) -> HTTPStatusError:
    return HTTPStatusError(response.status_code, url=url,
                           retry_after=parse_retry_after(response.headers.get("retry-after")),
                           content_type=response.headers.get("content-type"))


def _transport_error(exc: httpx.TransportError, url: str) -> FetchError:
    """httpx's transport failures in our vocabulary; certificate problems are not retried."""
    if isinstance(exc, httpx.TimeoutException):
        return TransientError("timeout", url=url)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return FetchError("tls-error", url=url)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ProtocolError):
        return TransientError("protocol-error", url=url)
    return TransientError("connect-error", url=url)


# --- politeness, deadline, retries ------------------------------------------------------------

@asynccontextmanager
async def _turn(session: _Session, host: str, deadline: asyncio.Timeout | None) -> AsyncIterator[None]:
    """Hold a slot of `host` and one of `concurrency` (the host's spacing is waited for in `_hop`)."""
    stack = AsyncExitStack()
    try:
        async with _paused(deadline):  # waiting our turn is politeness, not the server's slowness
            await stack.enter_async_context(session.pacer.slot(host))
            await stack.enter_async_context(session.limit)
    except BaseException:
        await stack.aclose()
        raise
    async with stack:
        yield


def _host_delay(session: _Session, url: str) -> float:
    """Seconds between starts to `url`'s host: ours, or the site's Crawl-delay up to the cap."""
    settings = session.settings
    known = session.robots.get(_origin(url))
    if known is None or not known.done() or known.cancelled() or known.exception() is not None:
        return settings.host_delay
    asked = known.result().delay(settings.user_agent)
    return max(settings.host_delay, min(asked, settings.crawl_delay_cap))


# --- robots.txt -------------------------------------------------------------------------------

def _origin(url: str) -> str:
    """`scheme://host[:port]` of an http(s) URL: the scope of one robots.txt."""
    parsed = _parse_url(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


async def _check_robots(session: _Session, url: str) -> None:
    """Raise unless `url`'s robots.txt lets us fetch it."""
    rules = await _robots_for(session, _origin(url))
    if rules.allows(url, session.settings.user_agent):
        return
    if rules.verdict is Verdict.UNAVAILABLE:
        raise FetchError("robots-unavailable", url=url)
    raise RobotsError(url)


async def _robots_for(session: _Session, origin: str) -> Robots:
    """The origin's robots verdict: from this session, the disk cache, or fetched once."""
    if origin not in session.robots:
        session.robots[origin] = asyncio.ensure_future(_load_robots(session, origin))
    # shield: a page giving up waiting must not cancel the fetch that other pages wait for
    return await asyncio.shield(session.robots[origin])


async def _load_robots(session: _Session, origin: str) -> Robots:
    settings = session.settings
    rules = session.robots_cache.get(origin, settings.robots_ttl, settings.robots_error_ttl)
    if rules is None:
        rules = await _fetch_robots(session, origin)
        session.robots_cache.put(rules)
    log.debug("robots %s: %s (%s)", origin, rules.verdict, rules.cause)
    return rules


async def _fetch_robots(session: _Session, origin: str) -> Robots:
    """Fetch and judge `origin/robots.txt` under the same rules as any page (own deadline)."""
    try:
        status, body = await _with_deadline(session, lambda d: _get_robots(session, origin + "/robots.txt", d))
    except FetchError as exc:
        return from_error(origin, exc.reason)
    return from_status(origin, status, body)


async def _get_robots(session: _Session, url: str, deadline: asyncio.Timeout | None) -> tuple[int, bytes]:
    """One attempt: the final status and, for a 2xx, the first ROBOTS_MAX_BYTES of the body."""
    async with _follow(session, url, {"Accept": "text/plain, */*;q=0.5"}, deadline) as (response, final):
        if response.status_code in RETRY_STATUSES:
            raise _status_error(response, final)  # retried like any page, then "unavailable"
        if not 200 <= response.status_code < 300:
            return response.status_code, b""
        return response.status_code, await _read_prefix(response, ROBOTS_MAX_BYTES)


@asynccontextmanager
async def _paused(deadline: asyncio.Timeout | None) -> AsyncIterator[None]:
    """Stop `deadline`'s clock for the duration of the block."""
    if deadline is None or deadline.expired() or deadline.when() is None:
        yield
        return
    loop = asyncio.get_running_loop()
    remaining = deadline.when() - loop.time()  # type: ignore[operator]
    deadline.reschedule(None)
    try:
        yield
    finally:
        deadline.reschedule(loop.time() + remaining)


async def _one_off(settings: Settings, attempt: Callable[[_Session, asyncio.Timeout | None], Awaitable[T]],
                   deadline: bool = True) -> T:
    """Run `attempt` with retries in a session of its own (for the sync entry points)."""
    async with _session(settings) as session:
        if not deadline:
            return await _retrying(lambda: attempt(session, None), settings, None)
        return await _with_deadline(session, lambda d: attempt(session, d))


async def _with_deadline(session: _Session, attempt: Callable[[asyncio.Timeout], Awaitable[T]]) -> T:
    """`attempt` with retries, all within one `settings.deadline`."""
    try:
        async with asyncio.timeout(session.settings.deadline) as deadline:
            return await _retrying(lambda: attempt(deadline), session.settings, deadline)
    except TimeoutError as exc:
        raise DeadlineError() from exc


async def _retrying(attempt: Callable[[], Awaitable[T]], settings: Settings,
                    deadline: asyncio.Timeout | None) -> T:
    """`attempt` again after transient failures, at most MAX_ATTEMPTS times."""
    for n in range(MAX_ATTEMPTS):
        try:
            return await attempt()
        except FetchError as exc:
            if not exc.transient or n == MAX_ATTEMPTS - 1:
                raise
            delay = _retry_delay(exc, n, settings)
        async with _paused(deadline):
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _retry_delay(exc: FetchError, n: int, settings: Settings) -> float:
    """Seconds before attempt n+2: the server's Retry-After, else exponential backoff with jitter."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        if retry_after > settings.retry_after_cap:
            raise FetchError("retry-after-too-long", url=exc.url, status=exc.status) from exc
        return retry_after
    return settings.retry_backoff * 2**n * random.uniform(0.5, 1.5)


# --- bodies -----------------------------------------------------------------------------------

async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    """The whole decoded body, at most `max_bytes`."""
    body = bytearray()
    async for piece in _stream_body(response, max_bytes):
        body += piece
    return bytes(body)


async def _read_prefix(response: httpx.Response, max_bytes: int) -> bytes:
    """The first `max_bytes` of the decoded body; the rest is never read (RFC 9309 robots.txt cap)."""
    body = bytearray()
    async for piece in _stream_body(response, sys.maxsize):
        body += piece
        if len(body) >= max_bytes:
            break
    return bytes(body[:max_bytes])


async def _stream_body(response: httpx.Response, max_bytes: int) -> AsyncIterator[bytes]:
    """The body decoded from its Content-Encoding, raising TooLargeError past `max_bytes` decoded."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes and "content-encoding" not in response.headers:
        raise TooLargeError()
    decoder = _decoder(response.headers.get("content-encoding", ""))
    total = 0
    try:
        async for chunk in response.aiter_raw():
            for piece in decoder.feed(chunk):
                total += len(piece)
                if total > max_bytes:
                    raise TooLargeError()
                yield piece
    except httpx.TransportError as exc:
        raise _transport_error(exc, str(response.url)) from exc
    except (zlib.error, brotli.error) as exc:
        raise FetchError("decode-error") from exc
    for piece in decoder.flush():
        total += len(piece)
        if total > max_bytes:
            raise TooLargeError()
        yield piece


class _Zlib:
    """gzip or deflate, producing at most _CHUNK bytes per step."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._wbits = zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                out = self._d.decompress(data, _CHUNK)
            except zlib.error:
                if self._gzip or self._started:
                    raise
                # "deflate" is often sent raw, without the zlib header (httpx falls back too).
                self._wbits, self._d = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._d.decompress(data, _CHUNK)
            self._started = True
            if out:
                yield out
            data = self._d.unconsumed_tail
            if self._d.eof:
                data = self._d.unused_data
                if not (data and self._gzip):
                    return  # bytes after the end of a deflate stream are ignored, as httpx does
                self._d = zlib.decompressobj(self._wbits)  # the next member of a multi-member gzip
            elif not data and len(out) < _CHUNK:
                return

    def flush(self) -> Iterator[bytes]:
        yield self._d.flush()


class _Brotli:
    """brotli, producing at most _CHUNK bytes per step (needs brotli >= 1.2's output limit)."""

    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield self._d.process(data, output_buffer_limit=_CHUNK)
        while not self._d.can_accept_more_data():
            yield self._d.process(b"", output_buffer_limit=_CHUNK)

    def flush(self) -> Iterator[bytes]:
        return iter(())


class _Chain:
    """Stacked Content-Encodings, undone in reverse order of application."""

    def __init__(self, decoders: list[_Zlib | _Brotli]) -> None:
        self._decoders = decoders

    def feed(self, data: bytes, start: int = 0) -> Iterator[bytes]:
        if start == len(self._decoders):
            if data:
                yield data
            return
        for piece in self._decoders[start].feed(data):
            yield from self.feed(piece, start + 1)

    def flush(self) -> Iterator[bytes]:
        for i, decoder in enumerate(self._decoders):
            for piece in decoder.flush():
                yield from self.feed(piece, i + 1)


def _decoder(content_encoding: str) -> _Chain:
    """A decoder for a Content-Encoding header like `gzip, br`."""
    decoders: list[_Zlib | _Brotli] = []
    for name in reversed([e.strip().lower() for e in content_encoding.split(",") if e.strip()]):
        if name in ("gzip", "x-gzip", "deflate"):
            decoders.append(_Zlib(name))
        elif name == "br":
            decoders.append(_Brotli())
        elif name != "identity":
            raise FetchError("bad-encoding")
    return _Chain(decoders)
