"""Normalise what extraction found: URLs, ids, dates, authors, titles, language, hashes.

Plain functions over plain values, and `normalise_batch` that fills an `Article`'s normalise
fields from its `extracted` page data and its source `hints`. courlan does the URL work;
dates are ISO 8601 or RFC 2822 (what pages, feeds and sitemaps give), which the standard
library parses, so no date-guessing library (dateparser) is pulled in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit, urlunsplit

from courlan import clean_url, extract_domain

from tasks.records import Article, Extracted

# Pages and sitemaps with dates before the web (and before most news archives) are wrong
# far more often than right: a CMS default (1970-01-01) or a birth date found by htmldate.
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
# A page date may run ahead of our clock by a time zone or a scheduled post; more is a wrong
# date (htmldate #28: a date taken from a JS string, in the future).
FUTURE_SLACK = timedelta(days=1)


# --- URLs and ids ---------------------------------------------------------------------------

# --- Google News article links -------------------------------------------------------------------
#
# Google News feeds and sitemaps link to news.google.com/rss/articles/<id> (also /articles/,
# /read/), not to the publisher. The id is a base64url protobuf message: field 1 a varint, field 4
# the target. Until July 2024 the target was the publisher's URL in clear (links in older
# archives, GDELT exports and CC-NEWS are still like that); since then it is an opaque token
# ("AU_yqL...") that only Google's own batchexecute RPC turns into a URL. newsflow decodes the
# first kind without asking Google and leaves the second unfetched (the page it would get is a
# JavaScript interstitial, not the article). Written by hand: reading two protobuf fields needs no
# schema, and the protobuf package offers no schema-less decoder.
_GOOGLE_NEWS_ARTICLE = re.compile(r"^https?://news\.google\.com/(?:rss/)?(?:articles|read)/([A-Za-z0-9_-]+)")


class OpaqueGoogleNewsLink(ValueError):
    """A Google News article link whose target only Google can resolve."""


def google_news_target(url: str) -> str | None:
    """The publisher URL a Google News article link encodes; None for any other URL. Raises
    OpaqueGoogleNewsLink for a link that does not carry the URL itself (the post-2024 form)."""
    match = _GOOGLE_NEWS_ARTICLE.match(url)
    if match is None:
        return None
    try:
        message = base64.urlsafe_b64decode(match[1] + "=" * (-len(match[1]) % 4))
    except (binascii.Error, ValueError):
        raise OpaqueGoogleNewsLink(url) from None
    target = _protobuf_field(message, 4)
    if target is None or not target.startswith((b"http://", b"https://")):
        raise OpaqueGoogleNewsLink(url)
    return target.decode("utf-8", "replace")


def _protobuf_field(message: bytes, number: int) -> bytes | None:
    """The first length-delimited field `number` of a protobuf message (wire format), or None."""
    at = 0
    try:
        while at < len(message):
            key, at = _varint(message, at)
            kind = key & 7
            if kind == 0:
                _, at = _varint(message, at)
            elif kind == 2:
                length, at = _varint(message, at)
                if key >> 3 == number:
                    return message[at:at + length]
                at += length
            else:  # Google News ids hold only varints and strings
                return None
    except IndexError:  # cut short
        return None
    return None


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


# Pure, and called for the same URLs by dedupe, normalise and load of one batch. Bounded by the
# URLs in flight (a few batches, each URL in up to three spellings), not by the run: a cache of
# 65,536 grew the loading process by ~20 MB between a 5,000- and a 50,000-page backfill.
@lru_cache(maxsize=8192)
def canonical_url(url: str) -> str:
    """`url` without trackers (utm_*, fbclid, gclid...), default port, fragment or AMP marker;
    scheme and host lowercased."""
    # courlan keeps meaningful query params (id=, page=) and sorts them; its non-strict mode
    # keeps some fragments, which never reach the server, so we drop them here.
    cleaned = clean_url(url) or url.strip()
    return _without_amp(urlunsplit(urlsplit(cleaned)._replace(fragment="")))


# AMP versions of a page: /story/amp, /amp/story, ?amp=1, ?outputType=amp, amp.example.com.
# courlan does not fold them (it cannot know the AMP page is the same article); publishers
# use these few spellings, so a small rule here is the whole of it.
_AMP_QUERY = re.compile(r"(^|&)(amp(=(1|true))?|outputtype=amp)(?=&|$)", re.IGNORECASE)


def _without_amp(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path
    if path.endswith(("/amp", "/amp/")) and len(path.rstrip("/")) > 4:
        path = path.rstrip("/").removesuffix("/amp") or "/"
    elif path.startswith("/amp/"):
        path = path.removeprefix("/amp")
    query = _AMP_QUERY.sub("", parts.query).strip("&")
    host = parts.netloc.removeprefix("amp.") if parts.netloc.count(".") >= 2 else parts.netloc
    return urlunsplit(parts._replace(netloc=host, path=path, query=query))


def canonical_forms(*urls: str | None) -> tuple[str, ...]:
    """The distinct canonical forms of `urls`, in their order (None and empty ones left out)."""
    return tuple(dict.fromkeys(canonical_url(url) for url in urls if url))


def identity_url(fetched_url: str, page_canonical: str | None) -> str:
    """The canonical URL that names an article: the page's own rel=canonical / og:url when it is
    on the same site (so AMP, mobile, print and tracking variants all name one article), else the
    fetched URL. A canonical link to another site (the wire service's, a partner's) is a fact about
    the page, never its identity; one to the site's front page is a CMS mistake and is ignored."""
    fetched = canonical_url(fetched_url)
    if not page_canonical:
        return fetched
    link = canonical_url(urljoin(fetched_url, page_canonical.strip()))
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or parts.path in ("", "/"):
        return fetched
    return link if same_site(link, fetched) else fetched


def same_site(a: str, b: str) -> bool:
    """Whether two URLs are on one registered domain (www., m. and amp. hosts included)."""
    site_a, site_b = extract_domain(a), extract_domain(b)
    return bool(site_a) and site_a == site_b


def article_id(canonical: str) -> str:
    """Stable id of an article: first 16 hex chars of the sha256 of its canonical URL."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def domain_of(url: str) -> str | None:
    """The host of `url`, lowercased, without port or a leading "www."."""
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.") or None


def clean_domains(domains: Iterable[str] | None) -> tuple[str, ...]:
    """Domains as hosts are compared: lowercased, no scheme, "www." or trailing dot; sorted."""
    cleaned = {(domain_of(d if "://" in d else f"http://{d}") or "").rstrip(".") for d in domains or ()}
    return tuple(sorted(d for d in cleaned if d))


# --- dates ----------------------------------------------------------------------------------

def parse_date(value: str | None) -> datetime | None:
    """An ISO 8601 or RFC 2822 date as an aware UTC datetime (naive means UTC); None if unparsable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    return as_utc(parsed)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _plausible(value: datetime | None, fetched_at: datetime) -> datetime | None:
    """`value` in UTC if it lies between 1990 and a day after the fetch, else None."""
    if value is None:
        return None
    value = as_utc(value)
    return value if EARLIEST <= value <= fetched_at + FUTURE_SLACK else None


def published_at(record: Article) -> datetime | None:
    """The page's date, else the feed/news-sitemap date, else the sitemap lastmod; wrong ones skipped."""
    fetched_at = as_utc(record.fetched_at or datetime.now(UTC))
    raw = record.extracted.date if record.extracted else None
    page = _plausible(parse_date(raw), fetched_at)
    hinted = _plausible(record.hints.published, fetched_at)
    if page is not None and hinted is not None and _is_bare_date(raw) and _same_day(hinted, page):
        # htmldate gives the page's date without a time; the feed agrees on the day and knows the hour.
        return hinted
    return page or hinted or _plausible(record.hints.lastmod, fetched_at)


def _is_bare_date(raw: str | None) -> bool:
    """Whether `raw` is a calendar date without a time of day."""
    return bool(raw) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw.strip()) is not None


def _same_day(moment: datetime, day: datetime) -> bool:
    """Whether `moment` falls on `day`'s date, in its own time zone or in UTC."""
    return day.date() in (moment.date(), moment.astimezone(UTC).date())


# --- authors --------------------------------------------------------------------------------

_NAME_SEPARATORS = re.compile(r"\s*(?:;|\||\n|/|&|\band\b|\bund\b|\bet\b)\s*", re.IGNORECASE)
_BYLINE_PREFIX = re.compile(r"^(?:(?:written|posted|reported|story|text)\s+)?by(?:[:\s]+|$)", re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_URL = re.compile(r"(?:https?://|www\.)\S*", re.IGNORECASE)
# Words that mark the part after a comma as a job title or desk, not a second name
# (newspaper #856: "Senior Correspondent" taken as an author).
_TITLE_WORDS = frozenset("""
    correspondent reporter editor writer columnist contributor journalist producer photographer
    analyst director chief senior associate bureau intern fellow professor manager anchor host
    critic staff editorial desk special contributing deputy managing executive head lead
""".split())


# Placeholder accounts CMSs put in the author field: never a person (issue 8).
_NOT_AUTHORS = frozenset({"admin", "administrator", "webmaster", "editor", "unknown", "guest", "root"})


def clean_authors(raw: Iterable[str], site_name: str | None = None) -> tuple[str, ...]:
    """Author names from raw bylines: split, "By" and e-mails and titles dropped, de-duplicated.

    Commas separate names ("A, B and C") except that a part after a comma holding a job-title
    word is dropped ("Jane Roe, Senior Correspondent" -> "Jane Roe"). "Doe, Jane" (two single
    capitalised words) is read as an inverted name -> "Jane Doe": rare in bylines, but it is how
    some CMSs fill JSON-LD, and two one-word co-authors are rarer still. All-caps parts (AP, AFP)
    are never inverted.
    """
    names: list[str] = []
    seen: set[str] = set(_NOT_AUTHORS)
    if site_name and site_name.strip():
        seen.add(" ".join(site_name.split()).casefold())  # the site is not its own author
    for byline in raw:
        for name in _names_in(byline or ""):
            key = name.casefold()
            if key not in seen:
                seen.add(key)
                names.append(name)
    return tuple(names)


def _names_in(byline: str) -> list[str]:
    """The names in one raw byline string."""
    byline = _URL.sub(" ", _EMAIL.sub(" ", byline.replace("\u00a0", " ")))
    byline = re.sub(r"\(\s*\)", " ", byline)
    found: list[str] = []
    for piece in _NAME_SEPARATORS.split(byline):
        found.extend(_comma_names(piece))
    return [name for name in (_tidy(n) for n in found) if name]


def _comma_names(piece: str) -> list[str]:
    """Split one piece on commas: titles after a comma dropped, "Doe, Jane" inverted."""
    parts = [_tidy(p) for p in piece.split(",")]
    parts = [p for p in parts if p]
    if len(parts) == 2 and all(_is_single_name_word(p) for p in parts):
        return [f"{parts[1]} {parts[0]}"]
    return parts[:1] + [p for p in parts[1:] if not _is_job_title(p)]


def _is_single_name_word(part: str) -> bool:
    return " " not in part and part[:1].isupper() and not part.isupper() and not _is_job_title(part)


def _is_job_title(part: str) -> bool:
    return any(word in _TITLE_WORDS for word in re.findall(r"\w+", part.casefold()))


def _tidy(name: str) -> str:
    """One name with "By" and stray punctuation removed ("" when nothing is left)."""
    name = " ".join(name.split()).strip(" .,:;-–—|·•\"'")
    name = _BYLINE_PREFIX.sub("", name).strip(" .,:;-–—|")
    if not name or not re.search(r"[^\W\d_]", name):
        return ""
    return name


# --- titles, language, text -----------------------------------------------------------------

_TITLE_SEPARATORS = r"\s+[|\-–—:·•]\s+"


def clean_title(title: str | None, site_name: str | None) -> str | None:
    """`title` without a " | Site", " - Site" or " — Site" suffix or prefix naming the site."""
    if not title or not title.strip():
        return None
    title = " ".join(title.split())
    if site_name and site_name.strip():
        site = re.escape(" ".join(site_name.split()))
        stripped = re.sub(rf"{_TITLE_SEPARATORS}{site}$", "", title, flags=re.IGNORECASE)
        stripped = re.sub(rf"^{site}{_TITLE_SEPARATORS}", "", stripped, flags=re.IGNORECASE)
        title = stripped.strip() or title
    return title


def language_code(value: str | None) -> str | None:
    """The ISO 639 language of a tag or locale ("en-US", "en_GB", "EN" -> "en"), None if it is none."""
    match = re.fullmatch(r"\s*([A-Za-z]{2,3})(?:[-_][A-Za-z0-9-_]*)?\s*", value or "")
    return match[1].lower() if match else None


def normalise_text(text: str) -> str:
    """`text` compatibility-normalised (NFKC), casefolded and with whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    """Hash of the normalised text (32 hex chars): equal for copies that differ in case or spacing."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()[:32]


# One CJK ideograph or kana counts as a word: those scripts do not put spaces between words,
# so a whitespace count would call every Chinese or Japanese article "too short".
_WORDS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def word_count(text: str) -> int:
    """Number of words in `text` (a CJK character counts as one)."""
    return len(_WORDS.findall(text))


# --- the stage ------------------------------------------------------------------------------

def normalise_batch(records: list[Article]) -> list[Article]:
    """Fill the normalise fields of every not-done record that has extracted data."""
    return [_normalise(r) if not r.done and r.extracted is not None else r for r in records]


def _normalise(record: Article) -> Article:
    """One record with canonical URL, id, domain, title, authors, date, language and hash set."""
    page: Extracted = record.extracted  # type: ignore[assignment]
    canonical = identity_url(record.final_url or record.url, page.canonical_link)
    hinted_title = " ".join(record.hints.title.split()) if record.hints.title else None
    return record.replace(
        canonical_url=canonical,
        url_keys=canonical_forms(record.url, record.final_url, canonical),
        article_id=article_id(canonical),
        domain=domain_of(canonical),
        title=clean_title(page.title, page.site_name) or hinted_title or None,
        authors=clean_authors(page.authors, page.site_name),
        published_at=published_at(record),
        language=language_code(page.language),
        word_count=page.word_count if page.word_count is not None else word_count(page.text),
        content_hash=content_hash(page.text),
    )
