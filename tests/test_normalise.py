"""Normalisation: canonical URLs, ids, dates, authors, titles, language codes, hashes, the stage."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks.normalise import (
    article_id,
    canonical_url,
    clean_authors,
    clean_title,
    content_hash,
    language_code,
    normalise_batch,
    normalise_text,
    parse_date,
    published_at,
    word_count,
)
from tasks.records import Article, Extracted, Hints, SourceKind, State

FETCHED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def article(date: str | None = None, published: datetime | None = None, lastmod: datetime | None = None,
            **extracted: object) -> Article:
    return Article(
        url="https://News.Example.com:443/world/story?utm_source=rss&id=7#comments",
        source="https://news.example.com/feed", source_kind=SourceKind.FEED,
        hints=Hints(title="Feed title", published=published, lastmod=lastmod),
        fetched_at=FETCHED, extracted=Extracted(text="Some text here", date=date, **extracted),
    )


# --- URLs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("https://example.com/a?utm_source=x&utm_medium=y&utm_campaign=z", "https://example.com/a"),
    ("https://example.com/a?fbclid=abc&gclid=def&id=3", "https://example.com/a?id=3"),
    ("HTTPS://Example.COM/Path/Story", "https://example.com/Path/Story"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com/a#section-2", "https://example.com/a"),
    ("https://example.com/a?page=2&q=tram", "https://example.com/a?page=2&q=tram"),
    ("https://example.com/a?q=tram&page=2", "https://example.com/a?page=2&q=tram"),
])
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_article_id_is_stable_and_short() -> None:
    one = article_id("https://example.com/a")
    assert one == article_id("https://example.com/a")
    assert one == hashlib.sha256(b"https://example.com/a").hexdigest()[:16]  # stored: must never change
    assert one != article_id("https://example.com/b")
    # the same story under tracking variants gets the same id
    assert article_id(canonical_url("https://Example.com/a?utm_source=x#top")) == article_id(canonical_url("https://example.com/a"))


# --- dates --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("2022-12-19", datetime(2022, 12, 19, tzinfo=UTC)),
    ("2022-12-19T10:30:00Z", datetime(2022, 12, 19, 10, 30, tzinfo=UTC)),
    ("2022-12-19T10:30:00+02:00", datetime(2022, 12, 19, 8, 30, tzinfo=UTC)),
    ("2022-12-19T10:30:00", datetime(2022, 12, 19, 10, 30, tzinfo=UTC)),  # naive means UTC
    ("Mon, 19 Dec 2022 10:30:00 -0500", datetime(2022, 12, 19, 15, 30, tzinfo=UTC)),
    ("Mon, 19 Dec 2022 10:30:00 GMT", datetime(2022, 12, 19, 10, 30, tzinfo=UTC)),
    ("not a date", None), ("", None), (None, None),
])
def test_parse_date(value: str | None, expected: datetime | None) -> None:
    parsed = parse_date(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_page_date_wins_over_hints() -> None:
    feed = datetime(2024, 4, 20, 8, 0, tzinfo=UTC)
    assert published_at(article("2024-04-28T10:00:00+00:00", published=feed)) == datetime(2024, 4, 28, 10, tzinfo=UTC)


def test_feed_time_refines_a_bare_page_date_on_the_same_day() -> None:
    feed = datetime(2024, 4, 28, 17, 45, tzinfo=timezone(timedelta(hours=-5)))
    assert published_at(article("2024-04-28", published=feed)) == feed.astimezone(UTC)
    assert published_at(article("2024-04-27", published=feed)) == datetime(2024, 4, 27, tzinfo=UTC)


def test_future_page_date_falls_back_to_feed_then_lastmod() -> None:
    feed = datetime(2024, 4, 30, 9, 0, tzinfo=UTC)
    lastmod = datetime(2024, 4, 29, tzinfo=UTC)
    assert published_at(article("2031-01-01", published=feed, lastmod=lastmod)) == feed
    assert published_at(article("2031-01-01", published=FETCHED + timedelta(days=3), lastmod=lastmod)) == lastmod
    assert published_at(article("2031-01-01")) is None


def test_dates_slightly_ahead_are_kept_and_pre_1990_rejected() -> None:
    assert published_at(article("2024-05-02T06:00:00+00:00")) == datetime(2024, 5, 2, 6, tzinfo=UTC)
    assert published_at(article("1970-01-01", lastmod=datetime(2024, 1, 2, tzinfo=UTC))) == datetime(2024, 1, 2, tzinfo=UTC)
    assert published_at(article(None, published=datetime(1989, 12, 31, tzinfo=UTC))) is None


# --- authors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (["By Jane Roe"], ("Jane Roe",)),
    (["BY: Jane Roe"], ("Jane Roe",)),
    (["Jane Roe and John Doe"], ("Jane Roe", "John Doe")),
    (["Jane Roe; John Doe"], ("Jane Roe", "John Doe")),
    (["Jane Roe, John Doe and Ann Lee"], ("Jane Roe", "John Doe", "Ann Lee")),
    (["Jane Roe, Senior Correspondent"], ("Jane Roe",)),
    (["By Jane Roe, Staff Writer; John Doe, Washington Bureau Chief"], ("Jane Roe", "John Doe")),
    (["Jane Roe jane.roe@example.com"], ("Jane Roe",)),
    (["jane.roe@example.com"], ()),
    (["https://example.com/authors/jane-roe", "Jane Roe"], ("Jane Roe",)),
    (["Jane Roe", "jane roe", "JANE ROE"], ("Jane Roe",)),
    (["", "  ", "By"], ()),
    (["Web Staff"], ("Web Staff",)),
    (["By Web Staff"], ("Web Staff",)),
    (["Doe, Jane"], ("Jane Doe",)),  # documented choice: two single words read as "Last, First"
    (["AP, AFP"], ("AP", "AFP")),     # but all-caps agencies are never inverted
    (["Anderson Cooper"], ("Anderson Cooper",)),  # "and" only as a word
    (["Byron Smith"], ("Byron Smith",)),  # "By" only as a word
])
def test_clean_authors(raw: list[str], expected: tuple[str, ...]) -> None:
    assert clean_authors(raw) == expected


# --- titles, language, text ---------------------------------------------------------------------

@pytest.mark.parametrize(("title", "site", "expected"), [
    ("Putin Visits Belarus | NTD", "NTD", "Putin Visits Belarus"),
    ("Putin Visits Belarus - NTD", "NTD", "Putin Visits Belarus"),
    ("Putin Visits Belarus — NTD", "ntd", "Putin Visits Belarus"),
    ("NTD | Putin Visits Belarus", "NTD", "Putin Visits Belarus"),
    ("Putin Visits Belarus", "NTD", "Putin Visits Belarus"),
    ("Spider-Man - A Review", "NTD", "Spider-Man - A Review"),  # separators kept unless they name the site
    ("Putin Visits Belarus | NTD", None, "Putin Visits Belarus | NTD"),
    ("NTD", "NTD", "NTD"),  # never strip to nothing
    ("  Spaced   out  ", None, "Spaced out"),
    (None, "NTD", None), ("   ", "NTD", None),
])
def test_clean_title(title: str | None, site: str | None, expected: str | None) -> None:
    assert clean_title(title, site) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("en-US", "en"), ("en_GB", "en"), ("EN", "en"), ("zh-Hant-TW", "zh"), ("fil", "fil"),
    ("", None), (None, None), ("english language", None), ("x", None),
])
def test_language_code(value: str | None, expected: str | None) -> None:
    assert language_code(value) == expected


def test_content_hash_ignores_case_and_spacing_only() -> None:
    text = "Putin  visits\nBelarus.\n\nLukashenko   thanks him."
    assert normalise_text(text) == "putin visits belarus. lukashenko thanks him."
    assert content_hash(text) == content_hash("PUTIN visits Belarus. Lukashenko thanks him.  ")
    assert content_hash(text) != content_hash("Putin visits Belarus. Lukashenko thanked him.")
    assert len(content_hash(text)) == 32 and int(content_hash(text), 16) >= 0
    # a fixed value: the hash must not change between runs or versions (it is stored)
    assert content_hash("abc") == "ba7816bf8f01cfea414140de5dae2223"


def test_word_count() -> None:
    assert word_count("Putin visits Belarus, again.") == 4
    assert word_count("東京都は月曜日") == 7
    assert word_count("") == 0


# --- the stage ----------------------------------------------------------------------------------

def test_normalise_batch_fills_fields_and_passes_done_records_through() -> None:
    record = article(
        "2022-12-19", title="Putin Visits Belarus | NTD", site_name="NTD", authors=("By Web Staff",),
        language="en-US",
    ).replace(final_url="https://www.News.example.com/world/story?id=7&utm_medium=feed")
    done = article().finish(State.FAILED, "extract-timeout")
    bare = Article(url="https://example.com/x", source="s", source_kind=SourceKind.URLS)

    out, done_out, bare_out = normalise_batch([record, done, bare])

    assert out.canonical_url == "https://www.news.example.com/world/story?id=7"
    # every key the record may be known by, found once here for dedupe and the load
    assert out.url_keys == ("https://news.example.com/world/story?id=7", out.canonical_url)
    assert out.article_id == article_id(out.canonical_url)
    assert out.domain == "news.example.com"
    assert out.title == "Putin Visits Belarus"
    assert out.authors == ("Web Staff",)
    assert out.published_at == datetime(2022, 12, 19, tzinfo=UTC)
    assert out.language == "en"
    assert out.word_count == 3
    assert out.content_hash == content_hash("Some text here")
    assert done_out is done and bare_out is bare


def test_the_extractors_word_count_is_used_and_counted_when_missing() -> None:
    (counted,) = normalise_batch([article(word_count=42)])  # the worker's count is not redone
    (uncounted,) = normalise_batch([article()])
    assert (counted.word_count, uncounted.word_count) == (42, 3)


def test_title_falls_back_to_the_feed_hint() -> None:
    (out,) = normalise_batch([article(title=None)])
    assert out.title == "Feed title"
    assert out.canonical_url == "https://news.example.com/world/story?id=7"


def test_authors_drop_placeholder_accounts_and_the_site_name() -> None:
    from tasks.normalise import clean_authors

    assert clean_authors(["Admin"]) == ()
    assert clean_authors(["By Jane Roe, Senior Correspondent", "Riverside Gazette"], "Riverside Gazette") == ("Jane Roe",)


# --- Google News article links --------------------------------------------------------------------

def google_news_link(target: bytes, path: str = "rss/articles") -> str:
    """A Google News article link as Google writes them: a base64url protobuf, field 1 a varint,
    field 4 the target, field 26 (older links) an AMP URL."""
    message = b"\x08\x13\x22" + bytes([len(target)]) + target + b"\xd2\x01\x00"
    return f"https://news.google.com/{path}/{base64.urlsafe_b64encode(message).decode().rstrip('=')}?oc=5"


def test_a_google_news_link_gives_the_publisher_url_it_carries() -> None:
    from tasks.normalise import OpaqueGoogleNewsLink, google_news_target

    url = "https://www.harbourgazette.example/2023/05/ferries-return.html"
    for path in ("rss/articles", "articles", "read"):
        assert google_news_target(google_news_link(url.encode(), path)) == url
    assert google_news_target("https://www.harbourgazette.example/2023/05/ferries-return.html") is None
    assert google_news_target("https://news.google.com/topics/CAAqBwgKMLqsqws") is None  # not an article link
    for opaque in (google_news_link(b"AU_yqLN5kz3r0w"),  # since July 2024: a token only Google resolves
                   "https://news.google.com/rss/articles/CBMi", "https://news.google.com/rss/articles/x"):
        with pytest.raises(OpaqueGoogleNewsLink):
            google_news_target(opaque)
