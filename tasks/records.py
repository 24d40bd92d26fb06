"""The one record type that flows through every stage, and its terminal states.

An `Article` is born in discovery with a URL, its source and the hints the source gave
(feed entry title, date, guid, categories; sitemap lastmod). Each stage returns a new
record with more fields filled, via `dataclasses.replace`:

    discover   url, source, source_kind, hints          (tasks/sources.py)
    fetch      final_url, http_status, raw, ...         (tasks/fetch.py)
    extract    extracted                                 (tasks/extract.py)
    normalise  canonical_url, url_keys, article_id, ...  (tasks/normalise.py)
    dedupe     state=duplicate when already known        (tasks/dedupe.py)
    load       state=loaded                              (tasks/load.py)

A record that reaches a terminal state (`state` set) is passed through untouched by every
later stage, so a batch always keeps all its URLs and each one ends in exactly one state.
Raw bytes never travel in a record: `raw` points into a WARC file (rule 3 of STYLE.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class State(StrEnum):
    """Terminal states of a URL in one run (the `fetches.state` column)."""

    LOADED = "loaded"  # a new article row was written
    DUPLICATE = "duplicate"  # URL or content already loaded (reason says which)
    NOT_ARTICLE = "not_article"  # fetched fine, but no article text on the page
    SKIPPED = "skipped"  # deliberately not fetched or not extracted (non-HTML, robots...)
    BLOCKED = "blocked"  # the publisher refused us (401/402/403)
    FAILED = "failed"  # something broke (network, timeout, parse error, extractor crash)


class SourceKind(StrEnum):
    FEED = "feed"
    SITEMAP = "sitemap"
    URLS = "urls"
    WARC = "warc"


@dataclass(frozen=True, slots=True)
class RawRef:
    """Where the raw HTTP response of a page lives: one record of a WARC file."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Hints:
    """What the source said about a URL before we fetched it; fallbacks for the page's own metadata."""

    title: str | None = None
    published: datetime | None = None  # feed pubDate / news:publication_date (aware)
    lastmod: datetime | None = None  # sitemap lastmod (aware)
    guid: str | None = None
    categories: tuple[str, ...] = ()
    # A revisit's validators: the ETag and Last-Modified of the response the stored version was
    # read from, sent as If-None-Match / If-Modified-Since (tasks/revisit.py, tasks/fetch.py).
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Extracted:
    """What the extractor found on the page, as the extractor gave it (not yet normalised)."""

    text: str = ""
    title: str | None = None
    authors: tuple[str, ...] = ()  # raw author strings; normalise splits and cleans them
    date: str | None = None  # raw date string from the page (ISO 8601 where possible)
    site_name: str | None = None
    description: str | None = None
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    image: str | None = None
    language: str | None = None  # as declared or detected, normalise makes it a code
    canonical_link: str | None = None  # the page's rel=canonical / og:url, a fact about the page
    extractor_version: str = ""
    # Where each metadata field came from ("json-ld", "meta", "trafilatura", "feed", "url"...),
    # as sorted (field, source) pairs: hashable, like the rest of the record.
    field_sources: tuple[tuple[str, str], ...] = ()
    extraction_settings: str = ""  # the options and cascade steps used, as compact JSON
    # Whether the page says anyone may read it: False where its JSON-LD (isAccessibleForFree, on
    # the article or a part of it) or its article:content_tier meta marks it paywalled, True
    # where it says free, None where it says nothing (`tasks.extract.declared_access`).
    free_access: bool | None = None
    # Whether the publisher reserves its text-and-data-mining rights (EU DSM Directive Art. 4,
    # W3C TDM Reservation Protocol) or opts the page out of AI use: True where the response's
    # `tdm-reservation` header or the page's tdm-reservation meta says 1, or its robots meta says
    # `noai`; False where tdm-reservation says 0; None where it says nothing
    # (`tasks.extract.declared_tdm`).
    tdm_reserved: bool | None = None
    # Words in `text` (tasks.normalise.word_count), counted once in the extraction worker, which
    # needs it for the too-short check; None when whoever built the record did not count them.
    word_count: int | None = None
    # MinHash of the final text (tasks.similarity), computed in the extraction worker so the
    # loading process does not spend ~1 ms a page on it; None for texts too short to sign.
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """One URL on its way through the pipeline."""

    url: str
    source: str  # a stable name of where the URL came from (feed URL, sitemap URL, file path...)
    source_kind: SourceKind
    hints: Hints = field(default_factory=Hints)
    # fetch
    final_url: str | None = None
    http_status: int | None = None
    fetched_at: datetime | None = None
    elapsed_ms: int | None = None
    n_bytes: int | None = None
    content_type: str | None = None  # the full Content-Type header, charset included
    raw: RawRef | None = None
    # extract
    extracted: Extracted | None = None
    # normalise
    canonical_url: str | None = None
    # The canonical forms of url, final_url and canonical_url: every key this record could already
    # be known by (`tasks.dedupe.url_variants`). Found once, here, for dedupe and the load, which
    # otherwise canonicalised each URL again (courlan, ~40 us a URL) in three places.
    url_keys: tuple[str, ...] = ()
    article_id: str | None = None
    domain: str | None = None
    title: str | None = None
    authors: tuple[str, ...] = ()
    published_at: datetime | None = None
    language: str | None = None
    word_count: int = 0
    content_hash: str | None = None
    # terminal state
    state: State | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.state is not None

    def finish(self, state: State, reason: str | None = None) -> Article:
        """This record in a terminal state; every state but `loaded` needs a reason."""
        if state is not State.LOADED and not reason:
            raise ValueError(f"state {state} needs a reason")
        return dataclasses.replace(self, state=state, reason=reason)

    def replace(self, **changes: Any) -> Article:
        return dataclasses.replace(self, **changes)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items. If reading `items` fails, the items read
    before the failure go out as a batch first, then the error (see `batches_with_last`)."""
    for batch, _ in batches_with_last(items, size):
        yield batch


_END: Any = object()


def batches_with_last(items: Iterable[T], size: int) -> Iterator[tuple[list[T], bool]]:
    """Consecutive lists of at most `size` items, each with whether it is the last.

    Only one item is read ahead, not a batch, so the first batch goes out as soon as it is
    read. If reading `items` fails (a WARC cut short mid-file), the items read before the
    failure go out as a batch that is not the last, then the error. Nothing read is lost.
    Written by hand: itertools.batched (3.12+) has no last flag, and a failure drops its
    partial batch.
    """
    if size < 1:
        raise ValueError("batch size must be at least 1")
    iterator = iter(items)
    batch: list[T] = []
    while True:
        try:
            item = next(iterator, _END)
        except Exception:  # only reading: an error raised into this generator is not a source's
            if batch:
                yield batch, False
            raise
        if item is _END:
            if batch:
                yield batch, True
            return
        if len(batch) == size:  # full, and not the last: `item` follows it
            yield batch, False
            batch = []
        batch.append(item)
