"""Discovery: feeds, sitemaps, URL lists, WARC files and sources.toml (tasks/sources.py).

Remote sources are read through a fetcher that looks URLs up in a dict of fixture bytes,
so nothing here touches the network.
"""

from __future__ import annotations

import gzip
import io
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks.archive import read_raw
from tasks.records import Article, Hints, SourceKind, State
from tasks.settings import Settings
from tasks.sources import (
    MAX_SITEMAP_URLS,
    SourceError,
    SourceProblem,
    SourceSpec,
    discover,
    discover_feed,
    discover_sources,
    discover_sitemap,
    discover_urls,
    download_warc,
    iter_url_file,
    iter_warc,
    load_sources_file,
    parse_feed,
    parse_sitemap,
    parse_url_lines,
    source_specs,
    urls_from_values,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
REPO = Path(__file__).resolve().parent.parent


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class DictFetch:
    """A fetcher over a dict of URL -> body; a missing URL raises KeyError like a 404 would."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pages[url]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def urls_of(records: list[Article]) -> list[str]:
    return [r.url for r in records]


# --- feeds ----------------------------------------------------------------------------------

def test_rss2_resolves_relative_links_keeps_hints_and_skips_bad_entries() -> None:
    feed_url = "https://news.example.com/feeds/rss.xml"
    records = parse_feed(fixture("rss2.xml"), feed_url)

    # The duplicate link appears once; mailto: and link-less entries are skipped.
    assert urls_of(records) == [
        "https://news.example.com/politics/council-budget",
        "https://news.example.com/weather/storm-harbour",
    ]
    first, second = records
    assert first.source == feed_url and first.source_kind is SourceKind.FEED
    assert first.hints.title == "Council approves new budget"
    assert first.hints.guid == "example-news-1001"
    assert first.hints.categories == ("Politics", "Local")
    assert first.hints.published == utc(2024, 5, 7, 7, 30)  # +0200 converted to UTC
    assert first.hints.published.tzinfo is UTC
    # The first of two entries with one link wins.
    assert second.hints.guid == "example-news-1002"


def test_rss1_rdf_feed() -> None:
    records = parse_feed(fixture("rss1.rdf"), "https://rdf.example.org/index.rdf", source="rdf")
    assert urls_of(records) == [
        "https://rdf.example.org/2024/05/science-grant",
        "https://rdf.example.org/2024/05/rail-strike",
    ]
    assert records[0].source == "rdf"
    assert records[0].hints.title == "University wins science grant"
    assert records[0].hints.published == utc(2024, 5, 6, 7, 15)
    assert records[0].hints.categories == ("Science",)
    assert records[0].hints.guid == "https://rdf.example.org/2024/05/science-grant"


def test_atom_resolves_links_against_xml_base() -> None:
    records = parse_feed(fixture("atom.xml"), "https://feeds.example.net/atom.xml")
    assert urls_of(records) == [
        "https://atom.example.net/blog/posts/first-post",  # the feed's xml:base, not its URL
        "https://other.example.net/section/story.html",  # the entry's own xml:base
    ]
    first, second = records
    assert first.hints.published == utc(2024, 5, 1, 14, 0)
    assert first.hints.categories == ("analysis",)
    assert first.hints.guid == "tag:atom.example.net,2024:entry-1"
    assert second.hints.published == utc(2024, 5, 3)  # only <updated> given


def test_json_feed_1_1() -> None:
    records = parse_feed(fixture("feed.json"), "https://json.example.com/feed.json")
    assert urls_of(records) == [
        "https://json.example.com/articles/transit-plan",
        "https://elsewhere.example.org/review",
    ]
    first, second = records
    assert first.hints.title == "City unveils transit plan"
    assert first.hints.published == utc(2024, 5, 5, 12, 30)
    assert first.hints.categories == ("transport", "city")
    assert second.hints.guid == "2002"  # a numeric id, kept as text
    assert second.hints.published == utc(2024, 5, 6, 9, 0)


@pytest.mark.parametrize("body", [
    fixture("not_a_feed.html"),
    b"\x00\x01 binary junk \xff",
    b'{"version": "1.0", "items": []}',  # JSON, but not a JSON Feed
    b'{"version": "https://jsonfeed.org/version/1.1", "items": [',  # broken JSON
])
def test_not_a_feed_raises_source_error(body: bytes) -> None:
    with pytest.raises(SourceError, match="not a feed"):
        parse_feed(body, "https://example.com/feed")


def test_a_body_that_looks_like_a_path_is_never_opened() -> None:
    # feedparser opens a string (even bytes) as a file name when it can: a server answering
    # with a local path must not make us parse that file.
    with pytest.raises(SourceError, match="not a feed"):
        parse_feed(str(FIXTURES / "rss2.xml").encode(), "https://evil.example.com/feed")


def test_xxe_feed_fails_fast_without_reading_the_file() -> None:
    start = time.perf_counter()
    with pytest.raises(SourceError, match="entities") as failure:
        parse_feed(fixture("xxe_feed.xml"), "https://xxe.example.com/rss")
    assert time.perf_counter() - start < 2.0
    assert "root:" not in str(failure.value)


def test_discover_feed_reads_urls_through_fetch_and_paths_directly() -> None:
    fetch = DictFetch({"https://news.example.com/rss.xml": fixture("rss2.xml")})
    remote = discover_feed("https://news.example.com/rss.xml", fetch)
    assert fetch.calls == ["https://news.example.com/rss.xml"]
    assert remote[0].url == "https://news.example.com/politics/council-budget"

    local = discover_feed(str(FIXTURES / "atom.xml"), DictFetch({}), source="atom")
    assert [r.source for r in local] == ["atom", "atom"]


# --- sitemaps -------------------------------------------------------------------------------

SITE = "https://site.example.com/sitemaps/"


def site_fetch() -> DictFetch:
    return DictFetch({
        SITE + "index.xml": fixture("sitemap_index.xml"),
        SITE + "news.xml": fixture("news_sitemap.xml"),
        SITE + "archive-2024-04.xml.gz": gzip.compress(fixture("urlset.xml")),
        # missing.xml is not there: the fetcher raises KeyError
    })


def test_sitemap_index_with_news_sitemap_and_gzipped_urlset() -> None:
    fetch = site_fetch()
    records, problems = discover_sitemap(SITE + "index.xml", fetch, source="site")

    assert urls_of(records) == [
        "https://site.example.com/2024/05/07/election-results",
        "https://site.example.com/2024/05/07/match-report",
        "https://site.example.com/2024/04/01/spring-opening",
        "https://site.example.com/2024/04/15/tax-day",
    ]  # duplicates and the ftp: link dropped; the news entry of a repeated URL wins
    assert {r.source for r in records} == {"site"}
    assert {r.source_kind for r in records} == {SourceKind.SITEMAP}
    election, match, spring, tax = records
    assert election.hints.title == "Election results are in"
    assert election.hints.published == utc(2024, 5, 7, 4, 45)
    assert election.hints.categories == ("elections", "politics")
    assert match.hints.published == utc(2024, 5, 7)
    assert match.hints.lastmod == utc(2024, 5, 7, 21, 0)
    assert spring.hints.lastmod == utc(2024, 4, 1, 8, 0)
    assert tax.hints.lastmod == utc(2024, 4, 15)

    # The failing child is reported, and did not cost its siblings.
    assert [p.source for p in problems] == [SITE + "missing.xml"]
    assert "KeyError" in problems[0].message
    assert sorted(fetch.calls) == sorted(SITE + n for n in
                                         ["index.xml", "news.xml", "archive-2024-04.xml.gz", "missing.xml"])


def test_sitemap_index_loop_terminates() -> None:
    base = "https://loop.example.com/"
    fetch = DictFetch({base + "a.xml": fixture("loop_a.xml"), base + "b.xml": fixture("loop_b.xml"),
                       base + "pages.xml": fixture("loop_pages.xml")})
    records, problems = discover_sitemap(base + "a.xml", fetch)
    assert urls_of(records) == ["https://loop.example.com/only-page"]
    assert problems == []
    # a -> b -> a is a loop, and pages.xml is named by both a and b: each is read once.
    assert fetch.calls == [base + "a.xml", base + "b.xml", base + "pages.xml"]


def test_sitemap_depth_is_bounded() -> None:
    base = "https://deep.example.com/"
    index = ('<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             "<sitemap><loc>{}</loc></sitemap></sitemapindex>")
    pages = {base + f"{i}.xml": index.format(base + f"{i + 1}.xml").encode() for i in range(5)}
    fetch = DictFetch(pages)
    records, problems = discover_sitemap(base + "0.xml", fetch)
    assert records == []
    assert fetch.calls == [base + f"{i}.xml" for i in range(4)]  # depths 0..3
    assert [p.source for p in problems] == [base + "4.xml"]
    assert "deeper than 3" in problems[0].message


def test_child_sitemaps_are_only_fetched_over_http() -> None:
    index = (b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             b"<sitemap><loc>file:///etc/passwd</loc></sitemap>"
             b"<sitemap><loc>/etc/passwd</loc></sitemap></sitemapindex>")
    fetch = DictFetch({"https://evil.example.com/index.xml": index})
    records, problems = discover_sitemap("https://evil.example.com/index.xml", fetch)
    # The relative loc resolves to an https URL on the same host: fetched (and missing), never read locally.
    assert records == []
    assert fetch.calls == ["https://evil.example.com/index.xml", "https://evil.example.com/etc/passwd"]
    assert [p.source for p in problems] == ["https://evil.example.com/etc/passwd"]


@pytest.mark.parametrize("name", ["billion_laughs.xml", "xxe_sitemap.xml"])
def test_entity_declaring_sitemaps_fail_fast(name: str) -> None:
    fetch = DictFetch({"https://x.example.com/sitemap.xml": fixture(name)})
    start = time.perf_counter()
    with pytest.raises(SourceError, match="entities") as failure:
        discover_sitemap("https://x.example.com/sitemap.xml", fetch)
    assert time.perf_counter() - start < 2.0
    assert "root:" not in str(failure.value)


def test_an_entity_declaring_child_is_a_problem_not_a_crash() -> None:
    index = (b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             b"<sitemap><loc>https://x.example.com/laughs.xml</loc></sitemap>"
             b"<sitemap><loc>https://x.example.com/pages.xml</loc></sitemap></sitemapindex>")
    fetch = DictFetch({"https://x.example.com/index.xml": index,
                       "https://x.example.com/laughs.xml": fixture("billion_laughs.xml"),
                       "https://x.example.com/pages.xml": fixture("loop_pages.xml")})
    records, problems = discover_sitemap("https://x.example.com/index.xml", fetch)
    assert urls_of(records) == ["https://loop.example.com/only-page"]
    assert len(problems) == 1 and "entities" in problems[0].message


def test_sitemap_keeps_at_most_50000_urls() -> None:
    entries = "".join(f"<url><loc>https://big.example.com/{i}</loc></url>" for i in range(MAX_SITEMAP_URLS + 7))
    body = f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'.encode()
    records, problems = discover_sitemap("https://big.example.com/s.xml",
                                         DictFetch({"https://big.example.com/s.xml": body}))
    assert len(records) == MAX_SITEMAP_URLS
    assert records[-1].url == f"https://big.example.com/{MAX_SITEMAP_URLS - 1}"
    assert len(problems) == 1 and "7 URLs" in problems[0].message


def test_gzip_bomb_stops_at_the_size_cap() -> None:
    bomb = gzip.compress(b" " * (50 * 1024 * 1024 + 1), compresslevel=1)
    assert len(bomb) < 1024 * 1024
    with pytest.raises(SourceError, match="more than"):
        parse_sitemap(bomb, "https://x.example.com/bomb.xml.gz")


@pytest.mark.parametrize("body,match", [
    (fixture("not_a_feed.html"), "not a sitemap: not XML"),
    (b"<html><body><p>Hello</p></body></html>", "root element <html>"),
    (b"Service temporarily unavailable", "neither XML nor a list of URLs"),
    (gzip.compress(fixture("urlset.xml"))[:-20], "broken gzip"),
])
def test_broken_sitemaps_raise(body: bytes, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_sitemap(body, "https://x.example.com/s.xml")


def test_a_cut_sitemap_keeps_the_entries_before_the_cut() -> None:
    body = fixture("urlset.xml")[:300]  # inside the second <url>
    doc = parse_sitemap(body, "https://site.example.com/s.xml")
    assert urls_of(doc.records)[0] == "https://site.example.com/2024/04/01/spring-opening"


def test_plain_text_sitemap() -> None:
    doc = parse_sitemap(b"https://t.example.com/a\nhttps://t.example.com/b\n", "https://t.example.com/s.txt")
    assert urls_of(doc.records) == ["https://t.example.com/a", "https://t.example.com/b"]
    assert {r.source_kind for r in doc.records} == {SourceKind.SITEMAP}


# --- URL lists ------------------------------------------------------------------------------

def test_url_list_file_with_comments_and_bad_lines() -> None:
    path = str(FIXTURES / "urls.txt")
    records, problems = discover_urls(path)
    assert urls_of(records) == [
        "https://news.example.com/politics/council-budget",
        "https://news.example.com/weather/storm-harbour",  # trailing comment stripped
        "https://news.example.com/sport/derby#live",  # a fragment is not a comment
    ]
    assert {r.source for r in records} == {path}
    assert {r.source_kind for r in records} == {SourceKind.URLS}
    assert problems == [
        SourceProblem(f"{path}:6", "not an http(s) URL: 'not a url at all'"),
        SourceProblem(f"{path}:8", "not an http(s) URL: 'ftp://files.example.com/report.pdf'"),
    ]


def test_url_values_and_single_url_sources() -> None:
    records, problems = urls_from_values(["https://a.example.com/1", "nope", "https://a.example.com/1"])
    assert urls_of(records) == ["https://a.example.com/1"]
    assert records[0].source == "urls"
    assert [p.source for p in problems] == ["--url:2"]

    records, problems = discover_urls("https://a.example.com/2", source="urls")
    assert urls_of(records) == ["https://a.example.com/2"] and problems == []
    assert parse_url_lines("", "urls") == ([], [])


def test_a_csv_url_list_gives_each_url_its_row_as_hints(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("\ufeffURL,Headline,Date,Section,Notes\n"
                    "https://news.example.com/a,Council passes budget,2026-11-28T09:30:00+01:00,Politics; Local,x\n"
                    "not a url,Broken row,2026-11-28,,\n"
                    ",Empty row,,,\n"
                    "https://news.example.com/b,,yesterday,,\n", encoding="utf-8")
    records, problems = discover_urls(str(path))
    assert urls_of(records) == ["https://news.example.com/a", "https://news.example.com/b"]
    first, second = records
    assert first.hints.title == "Council passes budget"
    assert first.hints.published == datetime(2026, 11, 28, 8, 30, tzinfo=UTC)
    assert first.hints.categories == ("Politics", "Local")
    assert second.hints == Hints()  # an unparsable date is no date
    assert problems == [SourceProblem(f"{path}:2", "not an http(s) URL: 'not a url'"),
                        SourceProblem(f"{path}:3", "no URL")]


def test_a_parquet_url_list_is_read_with_its_typed_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({
        "link": ["https://news.example.com/a", "https://news.example.com/b"],
        "published_at": pa.array([datetime(2026, 11, 28, 9, 30), None], pa.timestamp("us")),
        "keywords": [["storm", "harbour"], None],
        "id": ["guid-1", "guid-2"],
    }), path)
    records = list(iter_url_file(str(path), source="export"))
    assert urls_of(records) == ["https://news.example.com/a", "https://news.example.com/b"]
    assert records[0].hints == Hints(published=datetime(2026, 11, 28, 9, 30, tzinfo=UTC), guid="guid-1",
                                     categories=("storm", "harbour"))  # a naive timestamp is UTC
    assert records[1].hints == Hints(guid="guid-2") and {r.source for r in records} == {"export"}


def test_a_table_without_a_url_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "export.tsv"
    path.write_text("address\ttitle\nhttps://news.example.com/a\tA\n")
    with pytest.raises(SourceError, match=r"no URL column \(one of url, link.*\) among address, title"):
        discover_urls(str(path))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="not a Parquet file"):
        discover_urls(str(tmp_path / "bad.parquet"))
    with pytest.raises(SourceError, match="cannot read URL list"):
        discover_urls(str(tmp_path / "missing.parquet"))


def test_missing_url_list_raises() -> None:
    with pytest.raises(SourceError, match="cannot read URL list"):
        discover_urls(str(FIXTURES / "no-such-file.txt"))


def test_a_url_list_is_read_while_its_candidates_are_consumed(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"\xef\xbb\xbfhttps://a.example.com/1\nnot a url\n"
                     b"https://a.example.com/caf\xe9\n"  # Latin-1, not UTF-8: that line's problem
                     b"https://a.example.com/2\r\nhttps://a.example.com/1\n")
    specs = source_specs(urls_file=str(path), use_defaults=False)
    discovery = discover_sources(specs, Settings(), tmp_path / "news.duckdb")
    [state] = discovery.states
    assert state["last_status"] == "ok" and "last_error" not in state  # not read yet

    candidates = discovery.candidates()
    assert next(candidates).url == "https://a.example.com/1"
    assert "last_error" not in state  # the bad lines are further on: still unread
    assert urls_of(list(candidates)) == ["https://a.example.com/2"]  # the repeat is dropped
    assert state["last_status"] == "ok"
    assert state["last_error"] == (f"{path}:2: not an http(s) URL: 'not a url'; "
                                   f"{path}:3: not UTF-8: b'https://a.example.com/caf\\xe9\\n'")


@pytest.mark.parametrize(("given", "message"), [(lambda path: {"urls_file": path}, "cannot read URL list"),
                                               (lambda path: {"warcs": [path]}, "cannot read WARC")])
def test_a_missing_local_file_fails_during_discovery(tmp_path: Path, given: Callable, message: str) -> None:
    missing = str(tmp_path / "missing")
    discovery = discover_sources(source_specs(**given(missing), use_defaults=False), Settings(), tmp_path / "news.duckdb")
    [state] = discovery.states  # failed before any candidate is asked for
    assert state["last_status"] == "error" and message in state["last_error"]
    assert list(discovery.candidates()) == []


def test_a_url_list_file_ended_by_carriage_returns_is_split(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"https://a.example.com/1\rhttps://a.example.com/2\r# a comment\r")
    records, problems = discover_urls(str(path))
    assert urls_of(records) == ["https://a.example.com/1", "https://a.example.com/2"] and problems == []


# --- WARC -----------------------------------------------------------------------------------

HTML_PAGES = {
    f"https://warc.example.com/story-{i}":
        f"<html><body><h1>Story {i}</h1><p>{'text ' * 50 * (i + 1)}</p></body></html>".encode()
    for i in range(3)
}


def write_warc(path: Path, gzip_records: bool = True) -> None:
    """A WARC like a crawler writes: warcinfo, then request + response per URL, one image, one dns record."""
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=gzip_records)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "newsflow-tests"}))
        writer.write_record(writer.create_warc_record("dns:warc.example.com", "response",
                                                      payload=io.BytesIO(b"warc.example.com. 300 IN A 192.0.2.1\n"),
                                                      warc_content_type="text/dns"))
        pages = [*((url, "text/html; charset=utf-8", body) for url, body in HTML_PAGES.items())]
        pages.insert(2, ("https://warc.example.com/logo.jpg", "image/jpeg", b"\xff\xd8\xff" + bytes(4000)))
        for url, content_type, body in pages:
            request = StatusAndHeaders(f"GET {urlsplit(url).path} HTTP/1.1", [("Host", "warc.example.com")], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                                          http_headers=request))
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                                       protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), http_headers=headers,
                warc_headers_dict={"WARC-Date": "2024-05-07T10:11:12Z"}))


@pytest.fixture
def warc_path(tmp_path: Path) -> Path:
    path = tmp_path / "crawl.warc.gz"
    write_warc(path)
    return path


@pytest.mark.parametrize("gzipped", [True, False])
def test_warc_yields_html_responses_referenced_in_place(tmp_path: Path, gzipped: bool) -> None:
    path = tmp_path / ("crawl.warc.gz" if gzipped else "crawl.warc")
    write_warc(path, gzip_records=gzipped)
    records = list(iter_warc(path))

    assert urls_of(records) == list(HTML_PAGES)  # no image, request, warcinfo or dns records
    for record in records:
        assert record.source == str(path) and record.source_kind is SourceKind.WARC
        assert record.final_url == record.url
        assert record.http_status == 200
        assert record.fetched_at == utc(2024, 5, 7, 10, 11, 12)
        assert record.content_type == "text/html; charset=utf-8"
        assert record.n_bytes == len(HTML_PAGES[record.url])
        raw = read_raw(record.raw)  # the archive reads the record back from the reference
        assert raw.url == record.url and raw.status == 200
        assert raw.body == HTML_PAGES[record.url]


def test_warc_is_streamed_lazily(warc_path: Path) -> None:
    records = iter_warc(warc_path, source="sample")
    first = next(records)  # nothing read beyond what the first record needs
    assert first.url == "https://warc.example.com/story-0" and first.source == "sample"
    records.close()


def test_truncated_warc_raises(warc_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(warc_path.read_bytes()[:-200])
    with pytest.raises(SourceError, match="truncated"):
        list(iter_warc(cut))


@pytest.mark.parametrize("gzipped", [True, False])
def test_every_cut_inside_a_record_is_caught(tmp_path: Path, gzipped: bool) -> None:
    path = tmp_path / ("crawl.warc.gz" if gzipped else "crawl.warc")
    write_warc(path, gzip_records=gzipped)
    data = path.read_bytes()
    cut = tmp_path / path.name.replace("crawl", "cut")
    missed = []
    for size in range(1, len(data), 11):  # every 11th byte: ~1,200 cuts in ~1.5 s
        cut.write_bytes(data[:size])
        try:
            list(iter_warc(cut))
        except SourceError:
            continue
        missed.append(size)
    # Only cuts between records pass: a WARC cut there is a shorter valid WARC.
    assert all(_between_records(data, size, gzipped) for size in missed), missed


def test_a_damaged_byte_in_a_gzip_warc_is_caught_or_harmless(tmp_path: Path) -> None:
    # The scan inflates with ISA-L, not warcio's zlib: a flipped bit in a member must still fail
    # the file (the member's CRC, a broken deflate stream) unless it sits where gzip ignores it
    # (the header's timestamp, flags for absent fields), and then the records are unchanged.
    path = tmp_path / "crawl.warc.gz"
    write_warc(path)
    data = path.read_bytes()
    expected = [(r.url, r.n_bytes, r.raw.offset) for r in iter_warc(path)]
    damaged = tmp_path / "damaged.warc.gz"
    silent = []
    for position in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[position] ^= 0x55
        damaged.write_bytes(bytes(flipped))
        try:
            found = [(r.url, r.n_bytes, r.raw.offset) for r in iter_warc(damaged)]
        except SourceError:
            continue
        if found != expected:
            silent.append(position)
    assert not silent, f"damage at these offsets gave other records without an error: {silent}"


def _between_records(data: bytes, size: int, gzipped: bool) -> bool:
    if gzipped:
        return data[size:size + 2] == b"\x1f\x8b"  # each record is its own gzip member
    rest = data[size:].lstrip(b"\r\n")  # inside the CRLF CRLF that closes a record
    return rest.startswith(b"WARC/1.") or not rest


def test_truncated_uncompressed_warc_raises(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc"
    write_warc(path, gzip_records=False)
    cut = tmp_path / "cut.warc"
    cut.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(SourceError, match="truncated"):
        list(iter_warc(cut))


def test_a_warc_source_is_read_while_its_candidates_are_consumed(warc_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(warc_path.read_bytes()[:-200])  # the last record cut short
    feed = FIXTURES / "rss2.xml"
    specs = source_specs([str(feed)], None, None, None, [str(cut)], Settings(), use_defaults=False)
    discovery = discover_sources(specs, Settings(raw_dir=tmp_path / "raw"), tmp_path / "news.duckdb")
    assert [s["last_status"] for s in discovery.states] == ["ok", "ok"]  # the WARC not read yet

    candidates = discovery.candidates()
    from_feed = [next(candidates) for _ in parse_feed(feed.read_bytes(), str(feed))]
    assert {r.source_kind for r in from_feed} == {SourceKind.FEED}
    assert discovery.states[1]["last_status"] == "ok"  # still not read to its end: nothing held
    from_warc = list(candidates)
    # The records before the damage are candidates; the source's state says what happened to it.
    assert urls_of(from_warc) == list(HTML_PAGES)[:2]
    assert discovery.states[1]["last_status"] == "error" and "truncated" in discovery.states[1]["last_error"]


@pytest.mark.parametrize("body", [b"", b"<html>not a warc</html>", b"\x1f\x8b\x08\x00garbage"])
def test_not_a_warc_raises(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(body)
    with pytest.raises(SourceError):
        list(iter_warc(path))


def copy_into(source: Path, chunk: int = 1000) -> Callable[[str, BinaryIO], None]:
    """A stream fetcher that writes a local file in chunks, recording the URLs asked for."""
    calls: list[str] = []

    def stream_fetch(url: str, out: BinaryIO) -> None:
        calls.append(url)
        with source.open("rb") as src:
            shutil.copyfileobj(src, out, chunk)

    stream_fetch.calls = calls  # type: ignore[attr-defined]
    return stream_fetch


def test_download_warc_streams_to_disk_once(warc_path: Path, tmp_path: Path) -> None:
    url = "https://data.example.org/crawl-data/CC-NEWS/2024/05/CC-NEWS-20240507.warc.gz"
    fetch = copy_into(warc_path)
    path = download_warc(url, tmp_path / "downloads", fetch)
    assert path.parent == tmp_path / "downloads" and path.name.endswith("CC-NEWS-20240507.warc.gz")
    assert path.read_bytes() == warc_path.read_bytes()
    assert download_warc(url, tmp_path / "downloads", fetch) == path
    assert fetch.calls == [url]  # type: ignore[attr-defined]
    assert urls_of(list(iter_warc(path))) == list(HTML_PAGES)


def test_failed_download_leaves_nothing_behind(tmp_path: Path) -> None:
    def failing(url: str, out: BinaryIO) -> None:
        out.write(b"partial")
        raise ConnectionError("connection reset")

    with pytest.raises(ConnectionError):
        download_warc("https://data.example.org/x.warc.gz", tmp_path / "dl", failing)
    assert list((tmp_path / "dl").iterdir()) == []


# --- sources.toml and dispatch --------------------------------------------------------------

def test_load_sources_file() -> None:
    specs = load_sources_file(FIXTURES / "sources.toml")
    assert specs == [
        SourceSpec(SourceKind.FEED, "https://news.example.com/rss.xml", "example-news"),
        SourceSpec(SourceKind.SITEMAP, "https://site.example.com/sitemaps/index.xml"),
        SourceSpec(SourceKind.URLS, "tests/fixtures/sources/urls.txt"),
        SourceSpec(SourceKind.WARC, "data/sample/sample.warc.gz", "sample"),
    ]
    assert [s.label for s in specs][:2] == ["example-news", "https://site.example.com/sitemaps/index.xml"]


def test_the_repos_default_sources_file_loads() -> None:
    assert all(isinstance(s, SourceSpec) for s in load_sources_file(REPO / "data" / "sources.toml"))


@pytest.mark.parametrize("entry,match", [
    ('kind = "rss"\nlocation = "https://x.example.com/"', "kind 'rss' is not one of"),
    ('kind = "feed"', "missing `location`"),
    ('kind = "feed"\nlocation = "https://x.example.com/"\nurl = "typo"', "unknown keys"),
])
def test_bad_sources_file_names_file_and_entry(tmp_path: Path, entry: str, match: str) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(f'[[source]]\nkind = "warc"\nlocation = "a.warc.gz"\n\n[[source]]\n{entry}\n')
    with pytest.raises(SourceError, match=match) as failure:
        load_sources_file(path)
    assert f"{path}: source #2" in str(failure.value)


def test_unreadable_sources_file_raises(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[[source]\n")
    with pytest.raises(SourceError, match="broken.toml"):
        load_sources_file(tmp_path / "broken.toml")
    with pytest.raises(SourceError, match="missing.toml"):
        load_sources_file(tmp_path / "missing.toml")


def test_source_specs_from_flow_parameters_or_settings() -> None:
    specs = source_specs(["https://f.example.com/rss"], [], ["https://a.example.com/1"], "list.txt", ["a.warc.gz"])
    assert specs == [
        SourceSpec(SourceKind.FEED, "https://f.example.com/rss"),
        SourceSpec(SourceKind.URLS, "https://a.example.com/1", "urls"),
        SourceSpec(SourceKind.URLS, "list.txt"),
        SourceSpec(SourceKind.WARC, "a.warc.gz"),
    ]
    defaults = source_specs(None, None, None, None, None, Settings(sources_file=FIXTURES / "sources.toml"))
    assert len(defaults) == 4


def test_discover_dispatches_every_kind(warc_path: Path, tmp_path: Path) -> None:
    fetch = site_fetch()
    fetch.pages["https://news.example.com/rss.xml"] = fixture("rss2.xml")
    specs = [
        SourceSpec(SourceKind.FEED, "https://news.example.com/rss.xml", "example-news"),
        SourceSpec(SourceKind.SITEMAP, SITE + "index.xml"),
        SourceSpec(SourceKind.URLS, str(FIXTURES / "urls.txt")),
        SourceSpec(SourceKind.WARC, str(warc_path), "crawl"),
        SourceSpec(SourceKind.WARC, "https://data.example.org/remote.warc.gz"),
    ]
    problems: list[SourceProblem] = []
    found = {spec.kind: list(discover(spec, fetch, stream_fetch=copy_into(warc_path), download_dir=tmp_path / "dl",
                                      problems=problems)) for spec in specs[:4]}
    assert [len(found[k]) for k in SourceKind] == [2, 4, 3, 3]
    assert found[SourceKind.FEED][0].source == "example-news"
    assert found[SourceKind.WARC][0].source == "crawl"
    assert len(problems) == 3  # one missing child sitemap, two bad URL lines

    remote = list(discover(specs[4], fetch, stream_fetch=copy_into(warc_path), download_dir=tmp_path / "dl"))
    assert remote[0].source == "https://data.example.org/remote.warc.gz"
    assert Path(remote[0].raw.path).parent == tmp_path / "dl"
    with pytest.raises(SourceError, match="stream_fetch"):
        list(discover(specs[4], fetch))


def test_google_news_links_become_the_publishers_urls_or_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """A Google News feed links to news.google.com; an older link carries the publisher's URL,
    a newer one only a token: that one is never requested (Google would serve a script, not the
    article) and ends `skipped`, recorded like any other URL."""
    from tasks.load import ensure_schema, load_batch, run_summary
    from tasks.pipeline import prepare_batch
    from tests.conftest import rss
    from tests.test_normalise import google_news_link

    carried, opaque = google_news_link(b"https://news.example.com/ferries"), google_news_link(b"AU_yqLN5kz3r0w")
    records = parse_feed(rss([(carried, "Ferries return"), (opaque, "Storm closes port"), (carried, "Again")]),
                         "https://news.google.com/rss/search?q=harbour")
    assert [(r.url, r.hints.title, r.state, r.reason) for r in records] == [
        ("https://news.example.com/ferries", "Ferries return", None, None),  # the repeat is the same URL: once
        (opaque, "Storm closes port", State.SKIPPED, "google-news-opaque")]
    skipped = [r for r in records if r.done]
    assert len(skipped) == 1  # only records already finished go on: nothing here may reach the network
    db = tmp_path / "news.duckdb"
    ensure_schema(db)
    load_batch(db, "run-1", prepare_batch(db, skipped, Settings(raw_dir=tmp_path / "raw")))
    [entry] = run_summary(db, "run-1")
    assert (entry["skipped"], entry["top_reasons"]) == (1, ["skipped:google-news-opaque (1)"])
