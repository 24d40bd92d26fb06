"""Discover: turn feeds, sitemaps, URL lists and WARC files into candidate `Article` records.

Every format has a pure parser over bytes (or text) and a thin `discover_*` function that reads
the source: local paths directly, http(s) URLs through an injected `fetch(url) -> bytes` (the
lead wires it to the safe fetcher in `tasks/fetch.py`; tests pass a dict lookup). `discover`
dispatches one `SourceSpec`; `load_sources_file` reads the TOML list of default sources.

Failures, following STYLE.md rule 6:

    SourceError        the source as a whole cannot be read (not a feed, not a sitemap,
                       entity declarations, truncated WARC, bad sources.toml): raised.
    SourceProblem      a part of a source failed (one child sitemap, one bad line of a URL
                       list, URLs over the 50,000 cap): logged and returned as a value, and
                       the rest of the source is kept. `discover` appends them to `problems`.

Fetch errors of the top-level location propagate unchanged, so the task can retry them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import tomllib
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import struct_time
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import feedparser
from courlan import validate_url
from isal import isal_zlib
from lxml import etree
from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecord

from tasks.archive import WARC_ERRORS
from tasks.fetch import FetchError, conditional_headers, download, fetch_document
from tasks.normalise import OpaqueGoogleNewsLink, as_utc, google_news_target, parse_date
from tasks.records import Article, Hints, RawRef, SourceKind, State
from tasks.settings import Settings


logger = logging.getLogger(__name__)

Fetch = Callable[[str], bytes]
StreamFetch = Callable[[str, BinaryIO], None]  # writes the body of a URL into an open file

# sitemaps.org protocol limits: 50,000 URLs per sitemap, 50 MB (52,428,800 bytes) uncompressed.
MAX_SITEMAP_URLS = 50_000
MAX_SITEMAP_BYTES = 50 * 1024 * 1024
MAX_SITEMAP_DEPTH = 3
# What an article page is served as; a WARC's images, PDFs and scripts are not candidates.
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
GZIP_MAGIC = b"\x1f\x8b"


class SourceError(Exception):
    """A source as a whole cannot be read; the message says which source and why."""


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A part of a source that failed while the rest was kept (child sitemap, bad URL line...)."""

    source: str  # the part that failed: a child sitemap URL, `path:line`...
    message: str


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One source to discover from: what it is, where it is, and the name its records carry."""

    kind: SourceKind
    location: str  # URL or local path; for `urls` a text file, or one http(s) article URL
    name: str | None = None

    @property
    def label(self) -> str:
        """The `Article.source` of every record from this source."""
        return self.name or self.location


# --- sources.toml ---------------------------------------------------------------------------

_SPEC_KEYS = {"kind", "location", "name"}


def load_sources_file(path: str | Path) -> list[SourceSpec]:
    """The `[[source]]` entries of a TOML file; relative paths in it stay relative to the CWD."""
    try:
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SourceError(f"{path}: cannot read sources file: {exc}") from exc
    entries = document.get("source", [])
    if not isinstance(entries, list):
        raise SourceError(f"{path}: `source` must be an array of tables ([[source]])")
    return [_spec_from_entry(entry, f"{path}: source #{i}") for i, entry in enumerate(entries, 1)]


def _spec_from_entry(entry: Any, where: str) -> SourceSpec:
    if not isinstance(entry, dict):
        raise SourceError(f"{where}: expected a table, got {entry!r}")
    if unknown := set(entry) - _SPEC_KEYS:
        raise SourceError(f"{where}: unknown keys {sorted(unknown)} (expected {sorted(_SPEC_KEYS)})")
    kind, location, name = entry.get("kind"), entry.get("location"), entry.get("name")
    if kind not in {k.value for k in SourceKind}:
        allowed = ", ".join(k.value for k in SourceKind)
        raise SourceError(f"{where}: kind {kind!r} is not one of {allowed}")
    if not isinstance(location, str) or not location.strip():
        raise SourceError(f"{where}: missing `location` (a URL or a path)")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SourceError(f"{where}: `name` must be a non-empty string")
    return SourceSpec(SourceKind(kind), location.strip(), name.strip() if name else None)


def source_specs(feeds: Iterable[str] | None = (), sitemaps: Iterable[str] | None = (),
                 urls: Iterable[str] | None = (), urls_file: str | None = None,
                 warcs: Iterable[str] | None = (), settings: Settings | None = None,
                 use_defaults: bool = True) -> list[SourceSpec]:
    """Specs for the flow's source parameters; with none given (and `use_defaults`), those of
    `settings.sources_file`."""
    specs = [SourceSpec(SourceKind.FEED, f) for f in feeds or ()]
    specs += [SourceSpec(SourceKind.SITEMAP, s) for s in sitemaps or ()]
    specs += [SourceSpec(SourceKind.URLS, u, "urls") for u in urls or ()]
    specs += [SourceSpec(SourceKind.URLS, urls_file)] if urls_file else []
    specs += [SourceSpec(SourceKind.WARC, w) for w in warcs or ()]
    if not specs and settings is not None and use_defaults:
        return load_sources_file(settings.sources_file)
    return specs


# --- dispatch -------------------------------------------------------------------------------

def discover(spec: SourceSpec, fetch: Fetch, *, stream_fetch: StreamFetch | None = None,
             download_dir: Path | None = None,
             problems: list[SourceProblem] | None = None) -> Iterator[Article]:
    """Candidate records of one source; partial failures are appended to `problems`."""
    sink = problems if problems is not None else []
    if spec.kind is SourceKind.FEED:
        yield from discover_feed(spec.location, fetch, source=spec.label)
    elif spec.kind is SourceKind.SITEMAP:
        records, found = discover_sitemap(spec.location, fetch, source=spec.label)
        sink.extend(found)
        yield from records
    elif spec.kind is SourceKind.URLS:
        records, found = discover_urls(spec.location, source=spec.label)
        sink.extend(found)
        yield from records
    else:
        yield from iter_warc(local_warc(spec, stream_fetch, download_dir), source=spec.label)


def local_warc(spec: SourceSpec, stream_fetch: StreamFetch | None, download_dir: Path | None) -> str:
    """The local path of a WARC source, downloaded first when it is an http(s) URL."""
    if not _is_http(spec.location):
        return spec.location
    if stream_fetch is None or download_dir is None:
        raise SourceError(f"{spec.location}: a remote WARC needs stream_fetch and download_dir")
    return str(download_warc(spec.location, download_dir, stream_fetch))


def _is_http(location: str) -> bool:
    # A prefix test, not urlsplit: it runs once per sitemap URL (50,000 per file).
    return location[:8].lower().startswith(("http://", "https://"))


def _read_location(location: str, fetch: Fetch) -> bytes:
    """The bytes at an http(s) URL (through `fetch`) or a local path (read directly)."""
    if _is_http(location):
        return fetch(location)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", location):
        raise SourceError(f"{location}: only http(s) URLs and local paths are sources")
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise SourceError(f"{location}: cannot read: {exc}") from exc


# --- XML safety -----------------------------------------------------------------------------

# recover=True: sitemaps and feeds in the wild are often not well-formed (a bare `&` in a URL);
# trafilatura reads sitemaps with regexes for the same reason. Entities are never resolved,
# DTDs never loaded, nothing fetched, so a hostile document cannot expand or read files.
_SAFE_XML = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True)
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)


def parse_xml(data: bytes, where: str) -> etree._Element | None:
    """The root of `data` parsed safely, or None if it is not XML at all.

    Raises SourceError for a DOCTYPE declaring entities (billion laughs, XXE): no feed or sitemap
    needs them, and refusing them is simpler and safer than deciding which expansions are harmless.
    """
    try:
        root = etree.fromstring(data, etree.XMLParser(**_SAFE_XML))
    except etree.XMLSyntaxError:
        # Not even recoverable; a declaration in the prolog is still refused by name.
        if _ENTITY_DECL.search(data[:65536]):
            raise SourceError(f"{where}: refusing a document that declares XML entities") from None
        return None
    if root is None:
        return None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise SourceError(f"{where}: refusing a document that declares XML entities (XXE/billion laughs)")
    return root


# --- feeds ----------------------------------------------------------------------------------

def discover_feed(location: str, fetch: Fetch, *, source: str | None = None) -> list[Article]:
    """Candidates of one RSS/Atom/JSON feed at a URL or local path."""
    return parse_feed(_read_location(location, fetch), location, source=source)


def parse_feed(data: bytes, feed_url: str, *, source: str | None = None) -> list[Article]:
    """Candidates of an RSS 0.9x/1.0/2.0, Atom or JSON Feed document, one per distinct http(s) link."""
    source = source or feed_url
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        entries = _json_feed_entries(data, feed_url)
    else:
        entries = _xml_feed_entries(data, feed_url)
    return _unique_records(entries, source, SourceKind.FEED)


def _unique_records(entries: Iterable[tuple[str, Hints]], source: str, kind: SourceKind) -> list[Article]:
    """One record per distinct URL (first one wins), http(s) links only."""
    seen: dict[str, Article] = {}
    for url, hints in entries:
        if _is_http(url):
            record = candidate(url, source, kind, hints)
            seen.setdefault(record.url, record)
    return list(seen.values())


def candidate(url: str, source: str, kind: SourceKind, hints: Hints = Hints()) -> Article:
    """A discovered URL's record: a Google News article link becomes the publisher's URL it
    encodes, or, where only Google could resolve it, a record skipped with that reason
    (`tasks.normalise.google_news_target`)."""
    try:
        url = google_news_target(url) or url
    except OpaqueGoogleNewsLink:
        return Article(url=url, source=source, source_kind=kind, hints=hints).finish(State.SKIPPED, "google-news-opaque")
    return Article(url=url, source=source, source_kind=kind, hints=hints)


def _xml_feed_entries(data: bytes, feed_url: str) -> list[tuple[str, Hints]]:
    parse_xml(data, feed_url)  # only the entity guard: feedparser reads the document itself
    # A file object, never bytes or str: feedparser treats a string as a URL or a path to open
    # (even bytes are tried as a file name first). content-location sets the base for relative
    # links; xml:base inside the feed still overrides it.
    parsed = feedparser.parse(io.BytesIO(data), response_headers={"content-location": feed_url})
    if not parsed.entries and (parsed.bozo or not parsed.version):
        reason = parsed.get("bozo_exception") or "no RSS, RDF or Atom elements"
        raise SourceError(f"{feed_url}: not a feed (no entries; parser said: {reason})")
    return [(_join(feed_url, entry.get("link")), _entry_hints(entry)) for entry in parsed.entries]


def _join(base: str, link: Any) -> str:
    """`link` resolved against `base`; empty when there is no link (never `base` itself)."""
    link = link.strip() if isinstance(link, str) else ""
    # Most links are absolute already, and urljoin costs ~20 us a call: 1 s per big sitemap.
    return link if not link or _is_http(link) else urljoin(base, link)


def _entry_hints(entry: Any) -> Hints:
    terms = (tag.get("term") or tag.get("label") or "" for tag in entry.get("tags", []))
    return Hints(
        title=_clean(entry.get("title")),
        # Atom entries may carry only <updated>; it is the best date such a feed gives.
        # (No `lastmod`: feedparser copies an RSS pubDate into `updated`, so it would lie.)
        published=_struct_utc(entry.get("published_parsed") or entry.get("updated_parsed")),
        guid=_clean(entry.get("id")),
        categories=_distinct(terms),
    )


def _struct_utc(value: struct_time | None) -> datetime | None:
    """feedparser's parsed dates are struct_time in UTC."""
    return datetime(*value[:6], tzinfo=UTC) if value else None


def _clean(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    """Stripped, non-empty values in first-seen order."""
    return tuple(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def _json_feed_entries(data: bytes, feed_url: str) -> list[tuple[str, Hints]]:
    """Items of a JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1).

    By hand: feedparser reads XML feeds only, and the format is a small JSON object.
    """
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{feed_url}: not a feed: invalid JSON: {exc}") from exc
    version = document.get("version", "") if isinstance(document, dict) else ""
    if not (isinstance(version, str) and "jsonfeed.org/version/" in version):
        raise SourceError(f"{feed_url}: not a feed: JSON without a jsonfeed.org version")
    items = document.get("items")
    if not isinstance(items, list):
        raise SourceError(f"{feed_url}: JSON Feed without an `items` list")
    return [_json_item(item, feed_url) for item in items if isinstance(item, dict)]


def _json_item(item: dict[str, Any], feed_url: str) -> tuple[str, Hints]:
    link = item.get("url") or item.get("external_url") or ""
    tags = item.get("tags") if isinstance(item.get("tags"), list) else []
    date = _str_or_none(item.get("date_published")) or _str_or_none(item.get("date_modified"))
    hints = Hints(
        title=_clean(item.get("title")),
        published=parse_date(date),
        guid=_clean(item.get("id")),
        categories=_distinct(str(t) for t in tags),
    )
    return _join(feed_url, link), hints


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --- sitemaps -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SitemapDoc:
    """One parsed sitemap: page records (urlset) or child sitemap URLs (sitemapindex)."""

    records: list[Article]
    children: list[str]
    dropped: int = 0  # entries beyond MAX_SITEMAP_URLS


def discover_sitemap(location: str, fetch: Fetch, *, source: str | None = None,
                     max_depth: int = MAX_SITEMAP_DEPTH) -> tuple[list[Article], list[SourceProblem]]:
    """Candidates of a sitemap or sitemap index, following child sitemaps breadth-first.

    The root may be a local path; children are only ever fetched (a remote index must not make
    us read local files). A child seen before is skipped (loops), and so is one deeper than
    `max_depth`. A failing child is a problem; a failing root raises.
    """
    source = source or location
    visited: set[str] = set()
    records: dict[str, Article] = {}
    problems: list[SourceProblem] = []
    queue: deque[tuple[str, int]] = deque([(location, 0)])
    while queue:
        url, depth = queue.popleft()
        if url in visited:
            continue
        visited.add(url)
        doc = _read_sitemap(url, depth, fetch, source, problems)
        if doc is None:
            continue
        for record in doc.records:
            records.setdefault(record.url, record)
        if doc.dropped:
            _problem(problems, url, f"{doc.dropped} URLs over the {MAX_SITEMAP_URLS} per sitemap limit dropped")
        _queue_children(doc.children, depth, max_depth, visited, queue, problems)
    return list(records.values()), problems


def _read_sitemap(url: str, depth: int, fetch: Fetch, source: str,
                  problems: list[SourceProblem]) -> SitemapDoc | None:
    """The parsed sitemap at `url`; for a child, None (and a problem) when it fails."""
    if depth == 0:
        return parse_sitemap(_read_location(url, fetch), url, source=source)
    try:
        return parse_sitemap(fetch(url), url, source=source)
    # The fetcher is injected (tasks.fetch raises its own errors, a test's dict a KeyError):
    # whatever one child raises is reported, never swallowed, and never loses its siblings.
    except Exception as exc:  # noqa: BLE001
        _problem(problems, url, f"child sitemap failed: {type(exc).__name__}: {exc}")
        return None


def _queue_children(children: list[str], depth: int, max_depth: int, visited: set[str],
                    queue: deque[tuple[str, int]], problems: list[SourceProblem]) -> None:
    for child in children:
        if child in visited:
            logger.info("sitemap %s already read (loop or repeat), skipped", child)
        elif depth + 1 > max_depth:
            _problem(problems, child, f"not read: deeper than {max_depth} sitemap levels")
        else:
            queue.append((child, depth + 1))


def _problem(problems: list[SourceProblem], source: str, message: str) -> None:
    logger.warning("%s: %s", source, message)
    problems.append(SourceProblem(source, message))


def parse_sitemap(data: bytes, sitemap_url: str, *, source: str | None = None) -> SitemapDoc:
    """A urlset, sitemap index, Google News sitemap or plain-text sitemap; gzip bodies are unpacked."""
    source = source or sitemap_url
    data = _gunzip_capped(data, sitemap_url) if data.startswith(GZIP_MAGIC) else data
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        # sitemaps.org also allows a text file of URLs, one per line.
        records, problems = parse_url_lines(data.decode("utf-8", "replace"), source, where=sitemap_url)
        if problems and not records:
            raise SourceError(f"{sitemap_url}: not a sitemap: neither XML nor a list of URLs")
        return SitemapDoc(_as_sitemap_records(records[:MAX_SITEMAP_URLS]), [], _over_cap(records))
    root = parse_xml(data, sitemap_url)
    if root is None or not isinstance(root.tag, str):
        raise SourceError(f"{sitemap_url}: not a sitemap: not XML")
    kind = etree.QName(root).localname
    if kind == "sitemapindex":
        entries = root.findall("{*}sitemap")
        children = (_join(sitemap_url, _text(_children(e).get("loc"))) for e in entries[:MAX_SITEMAP_URLS])
        return SitemapDoc([], list(dict.fromkeys(u for u in children if _is_http(u))), _over_cap(entries))
    if kind != "urlset":
        raise SourceError(f"{sitemap_url}: not a sitemap: root element <{kind}>")
    entries = root.findall("{*}url")
    pairs = (_sitemap_entry(e, sitemap_url) for e in entries[:MAX_SITEMAP_URLS])
    return SitemapDoc(_unique_records(pairs, source, SourceKind.SITEMAP), [], _over_cap(entries))


def _over_cap(entries: list[Any]) -> int:
    """How many entries the sitemaps.org limit of 50,000 per file drops."""
    return max(0, len(entries) - MAX_SITEMAP_URLS)


def _as_sitemap_records(records: list[Article]) -> list[Article]:
    return [r.replace(source_kind=SourceKind.SITEMAP) for r in records]


def _sitemap_entry(entry: etree._Element, sitemap_url: str) -> tuple[str, Hints]:
    """A <url> element's link and hints (Google News: publication_date, title, keywords)."""
    fields = _children(entry)
    news = _children(fields["news"]) if "news" in fields else {}
    hints = Hints(
        title=_text(news.get("title")),
        published=parse_date(_text(news.get("publication_date"))),
        lastmod=parse_date(_text(fields.get("lastmod"))),
        categories=_distinct((_text(news.get("keywords")) or "").split(",")),
    )
    return _join(sitemap_url, _text(fields.get("loc"))), hints


def _children(element: etree._Element) -> dict[str, etree._Element]:
    """Child elements by local name (the first of each), whatever their namespace."""
    # One pass over the children: `find("{*}loc")` per field costs ~7 us, 1 s per big sitemap.
    found: dict[str, etree._Element] = {}
    for child in element:
        if isinstance(child.tag, str):
            found.setdefault(child.tag.rpartition("}")[2], child)
    return found


def _text(element: etree._Element | None) -> str | None:
    text = element.text.strip() if element is not None and element.text else ""
    return text or None


def _gunzip_capped(data: bytes, where: str, cap: int = MAX_SITEMAP_BYTES) -> bytes:
    """A gzip body unpacked, refusing more than `cap` bytes (a gzip bomb stops at the cap)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(cap + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{where}: broken gzip body: {exc}") from exc
    if len(out) > cap:
        raise SourceError(f"{where}: gzip body unpacks to more than {cap} bytes")
    return out


# --- URL lists ------------------------------------------------------------------------------

# A comment after a URL must follow whitespace: `#` alone may start a fragment.
_TRAILING_COMMENT = re.compile(r"\s+#.*$")


def discover_urls(location: str, *, source: str | None = None) -> tuple[list[Article], list[SourceProblem]]:
    """Candidates of a `urls` source: a text file of URLs, or one http(s) URL given directly."""
    source = source or location
    if _is_http(location):
        return parse_url_lines(location, source)
    problems: list[SourceProblem] = []
    return _unique_records(_url_file_entries(location, problems), source, SourceKind.URLS), problems


def iter_url_file(path: str, *, source: str | None = None,
                  problems: list[SourceProblem] | None = None) -> Iterator[Article]:
    """One record per valid line of a local URL list, read line by line: a list of millions of
    URLs is never held (the run's batches consume it as it is read). Invalid lines are appended
    to `problems`; a URL repeated in the list is left to `tasks.dedupe.unique_candidates`.
    Raises SourceError, after the lines before it, if the file cannot be read."""
    source = source or path
    for url, hints in _url_file_entries(path, problems if problems is not None else []):
        yield candidate(url, source, SourceKind.URLS, hints)


def urls_from_values(values: Iterable[str], source: str = "urls") -> tuple[list[Article], list[SourceProblem]]:
    """Candidates of URLs given one by one (`--url`); problems are numbered by position."""
    return parse_url_lines("\n".join(values), source, where="--url")


def parse_url_lines(text: str, source: str, *, where: str | None = None) -> tuple[list[Article], list[SourceProblem]]:
    """One record per distinct valid URL; `#` comments and blank lines skipped.

    An invalid line is a `SourceProblem` named `where:line` (returned and logged), never
    silently dropped; it does not cost the valid lines, like a failing child sitemap.
    """
    problems: list[SourceProblem] = []
    entries = _url_entries(text.splitlines(), where or source, problems)
    return _unique_records(entries, source, SourceKind.URLS), problems


def _url_file_entries(path: str, problems: list[SourceProblem]) -> Iterator[tuple[str, Hints]]:
    suffix = Path(path).suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            yield from _table_entries(path, suffix, problems)
            return
        with open(path, "rb") as lines:  # bytes: a line that is not UTF-8 is that line's problem
            yield from _url_entries(lines, path, problems)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read URL list: {exc}") from exc


# A URL list may be a table (a GDELT or a newsroom's export, a data team's Parquet): one row per
# URL, in the first column named one of URL_COLUMNS; the columns named in HINT_COLUMNS become the
# URL's hints, as a feed entry's would (fallbacks for what the page lacks, kept in feed_* columns).
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet"})
URL_COLUMNS = ("url", "link", "source_url", "sourceurl", "documentidentifier")
HINT_COLUMNS = {
    "title": ("title", "headline"),
    "published": ("published", "published_at", "date", "pubdate", "publication_date"),
    "guid": ("guid", "id"),
    "categories": ("categories", "category", "section", "keywords"),
}
TABLE_BATCH_ROWS = 10_000  # Parquet rows read at once: a file of millions is never held whole


def _table_entries(path: str, suffix: str, problems: list[SourceProblem]) -> Iterator[tuple[str, Hints]]:
    """The valid URLs of a CSV, TSV or Parquet file's rows, with their hints; each invalid row is a
    problem named `path:row` (row 1 is the first after a CSV's header)."""
    rows = _parquet_rows(path) if suffix == ".parquet" else _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    columns = next(rows)
    lowered = {c.strip().lower(): c for c in columns}
    url_column = next((lowered[name] for name in URL_COLUMNS if name in lowered), None)
    if url_column is None:
        raise SourceError(f"{path}: no URL column (one of {', '.join(URL_COLUMNS)}) among {', '.join(columns)}")
    hint_columns = {hint: next((lowered[n] for n in names if n in lowered), None) for hint, names in HINT_COLUMNS.items()}
    for number, row in enumerate(rows, 1):
        url = str(row.get(url_column) or "").strip()
        if _valid_url(url):
            yield url, _row_hints(row, hint_columns)
        elif url:
            _problem(problems, f"{path}:{number}", f"not an http(s) URL: {url!r}")
        else:
            _problem(problems, f"{path}:{number}", "no URL")


def _row_hints(row: dict[str, Any], columns: dict[str, str | None]) -> Hints:
    def value(hint: str) -> Any:
        column = columns[hint]
        return None if column is None else row.get(column)

    published = value("published")
    categories = value("categories")
    if isinstance(categories, str):
        categories = categories.replace(";", ",").split(",")
    return Hints(
        title=_clean(value("title")),
        published=as_utc(published) if isinstance(published, datetime) else parse_date(_clean(published)),
        guid=_clean(value("guid")),
        categories=_distinct(str(c) for c in categories or () if c is not None),
    )


def _csv_rows(path: str, delimiter: str) -> Iterator[Any]:
    """The header, then each row as a dict, read as it goes (UTF-8, a BOM allowed)."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream, delimiter=delimiter)
        try:
            yield reader.fieldnames or []
            yield from reader
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{path}: cannot read line {reader.line_num}: {exc}") from exc


def _parquet_rows(path: str) -> Iterator[Any]:
    """The column names, then each row as a dict, a batch of rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowInvalid as exc:  # a missing file is an OSError: "cannot read URL list", as for text
        raise SourceError(f"{path}: not a Parquet file: {exc}") from exc
    yield parquet.schema_arrow.names
    try:
        for batch in parquet.iter_batches(batch_size=TABLE_BATCH_ROWS):
            yield from batch.to_pylist()
    except pa.ArrowInvalid as exc:  # damaged after its footer: the rows before it are kept
        raise SourceError(f"{path}: cannot read its rows: {exc}") from exc


def _url_entries(lines: Iterable[str | bytes], where: str,
                 problems: list[SourceProblem]) -> Iterator[tuple[str, Hints]]:
    """The valid URLs of a URL list's lines; each invalid line is a problem named `where:line`."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                _problem(problems, f"{where}:{number}", f"not UTF-8: {line[:80]!r}")
                continue
        for part in line.splitlines():  # a file's lines end at "\n" only; "\r" (and the rest) too
            url = _TRAILING_COMMENT.sub("", part).strip()
            if not url or url.startswith("#"):
                continue
            if _valid_url(url):
                yield url, Hints()
            else:
                _problem(problems, f"{where}:{number}", f"not an http(s) URL: {url!r}")


_WHITESPACE = re.compile(r"\s")  # what str.isspace() calls whitespace, found in C, not char by char


def _valid_url(url: str) -> bool:
    # courlan accepts a space inside a URL; a line with one is two words, not a URL.
    return _WHITESPACE.search(url) is None and _is_http(url) and validate_url(url)[0]


# --- WARC files -----------------------------------------------------------------------------

# The scan inflates every byte of the file (a gzip member has no length field: the next record's
# offset is known only once this one is inflated), and zlib's inflate was the loading process's
# largest cost in a backfill. ISA-L inflates the same stream in about half the time (a 5,000-page,
# 533 MB WARC: 2.35 s of CPU scanned with zlib, 1.2 s with ISA-L). warcio picks its inflater
# from the reader's DECOMPRESSORS table (the hook it uses itself for brotli); the scanning
# iterator gets its own table, so no other warcio reader in the process changes.
_ISAL_DECOMPRESSORS = {"gzip": lambda: isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)}


def iter_warc(path: str | Path, *, source: str | None = None) -> Iterator[Article]:
    """One record per HTML `response` record of a local WARC, referenced in place (no payload copy).

    Streams: only the records' headers are parsed; payloads are skipped by warcio. Raises
    SourceError, after the records before it, if the file is truncated or corrupt.
    """
    path = str(path)
    source = source or path
    with _open_local(path, "WARC") as stream:
        size = os.fstat(stream.fileno()).st_size
        iterator = ArchiveIterator(stream)
        iterator.reader.DECOMPRESSORS = {**iterator.reader.DECOMPRESSORS, **_ISAL_DECOMPRESSORS}
        iterator.reader.set_decomp("gzip")  # nothing read yet: the first member's inflater is ISA-L's
        last = RawRef(path, 0, 0)
        for record in _warc_records(iterator, path):
            iterator.read_to_end(record)
            last = RawRef(path, iterator.get_record_offset(), iterator.get_record_length())
            _check_complete(record, last)
            if _is_html_response(record):
                yield _warc_article(record, last, source)
        _check_end(stream, last, size)


def _warc_records(iterator: ArchiveIterator, path: str) -> Iterator[ArcWarcRecord]:
    """warcio's records, its errors as SourceError (only around warcio's own reading)."""
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except WARC_ERRORS as exc:
            raise SourceError(f"{path}: corrupt or truncated WARC: {type(exc).__name__}: {exc}") from exc
        yield record


def _check_complete(record: ArcWarcRecord, ref: RawRef) -> None:
    """A record cut in its header block, or whose declared Content-Length is not all there."""
    # warcio stops silently at EOF: a header block cut short still parses (without the
    # mandatory Content-Length, or with a wrong one), and its LimitReader counts what is left.
    declared = (record.rec_headers.get_header("Content-Length") or "").strip()
    if record.format == "warc" and not declared.isdigit():
        raise SourceError(f"{ref.path}: truncated WARC: record at offset {ref.offset} has no Content-Length")
    missing = getattr(record.raw_stream, "limit", 0)
    if missing:
        raise SourceError(f"{ref.path}: truncated WARC: record at offset {ref.offset} is missing {missing} bytes")


def _check_end(stream: BinaryIO, last: RawRef, size: int) -> None:
    """Fail unless the records read reached the end of the file, and its last gzip member is whole.

    warcio stops silently where a cut file stops making sense, so the file size is the check.
    """
    end = last.offset + last.length
    if end == 0:
        raise SourceError(f"{last.path}: no WARC records found")
    stream.seek(end)
    # An uncompressed WARC's record length leaves out the record's closing CRLF CRLF.
    if stream.read(16).strip(b"\r\n"):
        raise SourceError(f"{last.path}: truncated or corrupt WARC: {size - end} unread bytes after offset {end}")
    stream.seek(last.offset)
    if stream.read(2) == GZIP_MAGIC:
        _check_gzip_member(stream, last)


def _check_gzip_member(stream: BinaryIO, last: RawRef) -> None:
    """A gzip WARC cut inside its last member's trailer still yields every record; zlib notices."""
    stream.seek(last.offset)  # one member is one record: this reads a record, not the file
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        while not decompressor.eof and (chunk := stream.read(1 << 16)):
            decompressor.decompress(chunk, 1 << 16)
            while decompressor.unconsumed_tail and not decompressor.eof:
                decompressor.decompress(decompressor.unconsumed_tail, 1 << 16)
    except zlib.error as exc:
        raise SourceError(f"{last.path}: corrupt gzip member at offset {last.offset}: {exc}") from exc
    if not decompressor.eof:
        raise SourceError(f"{last.path}: truncated WARC: the last gzip member (offset {last.offset}) is incomplete")


def _is_html_response(record: ArcWarcRecord) -> bool:
    """An HTTP(S) response whose Content-Type is HTML (dns: and other responses excluded)."""
    uri = record.rec_headers.get_header("WARC-Target-URI") or ""
    if record.rec_type != "response" or record.http_headers is None or not _is_http(uri):
        return False
    content_type = record.http_headers.get_header("Content-Type") or ""
    return content_type.split(";")[0].strip().lower() in HTML_TYPES


def _warc_article(record: ArcWarcRecord, raw: RawRef, source: str) -> Article:
    uri = record.rec_headers.get_header("WARC-Target-URI")
    http = record.http_headers
    return Article(
        url=uri, source=source, source_kind=SourceKind.WARC,
        final_url=uri,
        http_status=int(http.get_statuscode() or 0) or None,
        fetched_at=parse_date(record.rec_headers.get_header("WARC-Date")),
        # The stored payload: the record's content after the HTTP header block.
        n_bytes=max(0, record.length - http.total_len),
        content_type=http.get_header("Content-Type"),
        raw=raw,
    )


def download_warc(url: str, dest_dir: Path, stream_fetch: StreamFetch) -> Path:
    """A remote WARC streamed to `dest_dir` (reused when already there), then read in place.

    The file appears under its final name only once complete, so an existing file is whole.
    """
    if not _is_http(url):
        raise SourceError(f"{url}: only http(s) WARC URLs can be downloaded")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / _download_name(url)
    if target.exists():
        logger.info("WARC %s already downloaded to %s", url, target)
        return target
    part = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with part.open("xb") as out:
            stream_fetch(url, out)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def _download_name(url: str) -> str:
    """A file name from the URL's last path segment, prefixed by a hash so two URLs never collide."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", urlsplit(url).path.rsplit("/", 1)[-1]) or "download.warc.gz"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base.lstrip('.')}"


# --- the discovery stage of a run ---------------------------------------------------------------

@dataclass(slots=True)
class Discovery:
    """What a run's discovery found, source by source, and each source's new state.

    Feeds and sitemaps are read during discovery (their requests belong to it, and a sitemap holds
    at most 50,000 URLs). A WARC file or a local URL list is only located (a remote WARC
    downloaded, a local file opened once to check it can be): its records are read by `candidates()`
    while the run consumes them, batch by batch, so a source of any size is never held in memory
    (a candidate takes ~1 KB; a CC-NEWS file holds ~150,000 pages, a URL list may hold millions),
    and the first batch starts without waiting for the whole file.
    """

    parts: list[tuple[SourceSpec, dict[str, Any], list[Article] | str]]  # a file read lazily: its path
    retries: list[Article]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [state for _, state, _ in self.parts]

    def candidates(self) -> Iterator[Article]:
        """Every candidate in source order, then the re-driven URLs, one record per URL (the first
        source to name it wins, see `tasks.dedupe.unique_candidates`). A WARC file found truncated
        or corrupt while it is read keeps the records before the damage; its state gets the error.
        A URL list's invalid lines are noted in its state once the list is read."""
        from tasks.dedupe import unique_candidates

        return unique_candidates(self._all())

    def _all(self) -> Iterator[Article]:
        for spec, state, found in self.parts:
            if not isinstance(found, str):
                yield from found
                continue
            problems: list[SourceProblem] = []
            try:
                if spec.kind is SourceKind.WARC:
                    yield from iter_warc(found, source=spec.label)
                else:
                    yield from iter_url_file(found, source=spec.label, problems=problems)
            except SourceError as exc:
                _record_failure(spec, state, exc)
            _note_problems(state, problems)
        yield from self.retries


def _record_failure(spec: SourceSpec, state: dict[str, Any], exc: Exception) -> None:
    """A source that failed as a whole, during discovery or while its WARC is read: logged, and
    its state says why (saved by the flow after the run's batches)."""
    logger.warning("source %s failed: %s", spec.label, exc)
    state["last_status"], state["last_error"] = "error", str(exc)


def _note_problems(state: dict[str, Any], problems: list[SourceProblem]) -> None:
    """The parts of a source that failed while the rest was kept, in its state (the first five);
    a source that failed as a whole keeps that error instead."""
    if problems and state["last_status"] != "error":
        state["last_error"] = "; ".join(f"{p.source}: {p.message}" for p in problems[:5])


def discover_sources(specs: list[SourceSpec], settings: Settings, db: Path | str,
                     retry_failed: bool = False) -> Discovery:
    """Every source's candidates (a WARC's and a URL list's read lazily, see `Discovery`) and its
    new state.

    Feeds are polled with a conditional GET (ETag / Last-Modified) and a hash of the body, since
    many feeds send validators that never change: an unchanged feed costs one request and no work.
    A source that fails is recorded in its state and does not stop the others. The states are
    saved by the flow only after the run's batches are loaded, so a crash before then makes the
    rerun read the feed again instead of skipping it as unchanged. With `retry_failed`, the URLs
    whose last state was a transient failure are re-driven too.
    """
    from tasks.load import forgotten_rules, retry_candidates, source_states

    previous = source_states(db)
    forgotten = forgotten_rules(db)
    parts: list[tuple[SourceSpec, dict[str, Any], list[Article] | str]] = []
    for spec in specs:
        state: dict[str, Any] = {"name": spec.label, "kind": str(spec.kind), "location": spec.location,
                                 "last_checked_at": datetime.now(UTC), "last_status": "ok"}
        problems: list[SourceProblem] = []
        found: list[Article] | str
        try:
            if _is_http(spec.location) and forgotten.covers(spec.location):
                # `newsflow forget` took this URL or its domain out: not even its feed is requested
                raise SourceError(f"{spec.location}: forgotten (newsflow forget), not requested")
            if spec.kind is SourceKind.WARC:
                found = _openable(local_warc(spec, _streamer(settings), settings.raw_dir / "downloads"), "WARC")
            elif spec.kind is SourceKind.URLS and not _is_http(spec.location):
                found = _openable(spec.location, "URL list")
            elif spec.kind is SourceKind.FEED and _is_http(spec.location):
                found = _poll_feed(spec, settings, previous.get(spec.label, {}), state)
            else:
                found = list(discover(spec, _fetcher(spec, settings), problems=problems))
        except (SourceError, FetchError) as exc:
            _record_failure(spec, state, exc)
            found = []
        _note_problems(state, problems)
        parts.append((spec, state, found))
    return Discovery(parts, retry_candidates(db, settings) if retry_failed else [])


def _openable(path: str, what: str) -> str:
    """`path`, once it opens: a missing or unreadable file (a WARC, a URL list) fails in
    discovery, as a feed does, with the message its reader gives."""
    with _open_local(path, what):
        return path


def _open_local(path: str, what: str) -> BinaryIO:
    """A local source file opened for reading; one that cannot be opened is a SourceError."""
    try:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read {what}: {exc}") from exc


def _fetcher(spec: SourceSpec, settings: Settings) -> Fetch:
    limit = MAX_SITEMAP_BYTES if spec.kind is SourceKind.SITEMAP else settings.max_page_bytes
    return lambda url: fetch_document(url, settings, max_bytes=limit).body


def _streamer(settings: Settings) -> StreamFetch:
    # CC-NEWS files are about 1 GB; allow a few times that, but not an endless body.
    return lambda url, out: download(url, out, settings, max_bytes=8 * 1024**3)


def _poll_feed(spec: SourceSpec, settings: Settings, previous: dict[str, Any],
               state: dict[str, Any]) -> list[Article]:
    """A feed's entries, or none when it has not changed since the last poll."""
    document = fetch_document(spec.location, settings, conditional_headers(previous.get("etag"), previous.get("last_modified")))
    if document.status == 304:
        state["last_status"] = "not-modified"
        return []
    body_hash = hashlib.sha256(document.body).hexdigest()
    state.update(etag=document.header("etag"), last_modified=document.header("last-modified"),
                 body_hash=body_hash)
    if body_hash == previous.get("body_hash"):
        state["last_status"] = "unchanged"
        return []
    state["last_changed_at"] = state["last_checked_at"]
    return parse_feed(document.body, document.final_url, source=spec.label)


# --- Prefect task (thin wrapper) ----------------------------------------------------------------
from prefect import task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402

discover_task = task(name="discover", cache_policy=NONE)(discover_sources)
