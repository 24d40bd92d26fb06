"""URL and content identity: which records are copies of what is already loaded.

Pure functions over a batch and the keys the database already knows (looked up by
`tasks/load.py` in set-based SQL, inside the same transaction that inserts, so two
overlapping runs cannot both load the same article). No process-global caches: the
database is the memory, so identity holds across runs, sources and backfills.

Reasons given to duplicates (the `fetches.reason` column):
    url-seen       the URL (or a variant of it) already maps to an article
    same-content   the normalised text is already loaded under another URL of the same site
                   (on another site it is a syndicated copy: loaded, and clustered with the original)
    in-run         an earlier record of the same run had the same URL or text

Forgotten URLs and domains (`newsflow forget`, the `forgotten` table) are skipped before they
cost a request, with the reason `forgotten` (state skipped), and again at load, in case the rule
came while the batch was being fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from tasks.normalise import canonical_forms, canonical_url, domain_of
from tasks.records import Article, State


@dataclass(frozen=True, slots=True)
class KnownKeys:
    """What the database already holds for the keys of one batch."""

    urls: Mapping[str, str] = field(default_factory=dict)  # canonical URL variant -> article_id
    # (content_hash, domain) -> article_id: the same text on the same site is one article; on
    # another site it is a syndicated copy, loaded and clustered with the original (tasks/cluster_store.py)
    content: Mapping[tuple[str, str | None], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What `newsflow forget` removed and newsflow must never fetch or store again."""

    urls: frozenset[str] = frozenset()  # canonical URLs
    domains: frozenset[str] = frozenset()  # hosts as `domain_of` gives them; subdomains included

    def __bool__(self) -> bool:
        return bool(self.urls or self.domains)

    def covers(self, url: str) -> bool:
        """Whether `url` is a forgotten URL (any variant of it) or on a forgotten domain."""
        if canonical_url(url) in self.urls:
            return True
        host = domain_of(url) or ""
        return any(host == d or host.endswith("." + d) for d in self.domains)


def skip_forgotten(records: Iterable[Article], forgotten: Forgotten) -> list[Article]:
    """Records whose URL, final URL or canonical URL is forgotten finish skipped ("forgotten")."""
    if not forgotten:
        return list(records)
    return [r.finish(State.SKIPPED, "forgotten")
            if not r.done and any(forgotten.covers(u) for u in (r.url, r.final_url, r.canonical_url) if u) else r
            for r in records]


def url_variants(record: Article) -> tuple[str, ...]:
    """Every canonical URL form under which this record could already be known (normalise
    found them once for a normalised record: `Article.url_keys`)."""
    return record.url_keys or canonical_forms(record.url, record.final_url, record.canonical_url)


def unique_candidates(records: Iterable[Article]) -> Iterator[Article]:
    """Discovered records with one record per exact URL (the first source to name it wins), and
    later variants of an earlier URL (tracking parameters, case, fragment) marked duplicates
    before they cost a request. Streams: only the URLs seen are kept, not the records, and those
    as digests (see `_seen_key`)."""
    exact: set[bytes] = set()
    canonical: set[bytes] = set()
    for record in records:
        if (key := _seen_key(record.url)) in exact:
            continue
        exact.add(key)
        # where the URL is its own canonical form, both sets share one digest object
        variants = [key if v == record.url else _seen_key(v) for v in url_variants(record)]
        if not record.done and any(v in canonical for v in variants):
            record = record.finish(State.DUPLICATE, "in-run")
        canonical.update(variants)
        yield record


def _seen_key(url: str) -> bytes:
    """A URL's 16-byte BLAKE2b digest: what a run keeps of each URL it has seen. The two sets of
    URLs themselves took ~350 B a URL (a list of 200,000 held 65 MB by the end of its run; a URL
    list may hold millions), the digests 140-200 B; at 128 bits no two URLs share one by accident."""
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def skip_known_urls(records: Iterable[Article], known_urls: Mapping[str, str]) -> list[Article]:
    """Before fetching: a URL whose canonical form is already loaded is a duplicate, not a request."""
    out = []
    for record in records:
        if not record.done and (hit := _first_hit(url_variants(record), known_urls)):
            record = record.replace(article_id=hit).finish(State.DUPLICATE, "url-seen")
        out.append(record)
    return out


def mark_duplicates(records: Iterable[Article], known: KnownKeys) -> list[Article]:
    """After normalising: mark records whose URL or text is already known, in the DB or earlier in the batch."""
    batch_urls: dict[str, str] = {}
    batch_content: dict[tuple[str, str | None], str] = {}
    out = []
    for record in records:
        if not record.done and record.article_id:
            record = _check_one(record, known, batch_urls, batch_content)
        out.append(record)
    return out


def _check_one(record: Article, known: KnownKeys, batch_urls: dict[str, str],
               batch_content: dict[tuple[str, str | None], str]) -> Article:
    variants = url_variants(record)
    content_key = (record.content_hash, record.domain) if record.content_hash else None
    if hit := _first_hit(variants, known.urls):
        return record.replace(article_id=hit).finish(State.DUPLICATE, "url-seen")
    if content_key and (hit := known.content.get(content_key)):
        return record.replace(article_id=hit).finish(State.DUPLICATE, "same-content")
    if (hit := _first_hit(variants, batch_urls)) or (content_key and (hit := batch_content.get(content_key))):
        return record.replace(article_id=hit).finish(State.DUPLICATE, "in-run")
    for variant in variants:
        batch_urls[variant] = record.article_id  # type: ignore[assignment]
    if content_key:
        batch_content[content_key] = record.article_id  # type: ignore[assignment]
    return record


def _first_hit(keys: Iterable[str], known: Mapping[str, str]) -> str | None:
    return next((known[k] for k in keys if k in known), None)
