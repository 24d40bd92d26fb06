"""The bundled sample corpus (data/sample/): manifest, page files, WARC, feed and sitemap agree,
the corpus has the variety the pipeline's tests rely on, and regenerating it changes nothing."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import feedparser
import pytest
from warcio.archiveiterator import ArchiveIterator

from tests.conftest import load_script

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
SEED_FIXTURE = REPO / "tests" / "fixtures" / "seed_article.html"
SHARED_SEED = REPO.parent / "shared" / "seed" / "000_5f3fd007952f4428.txt"
SEED_URL = "https://www.kestrelnews.example/news/world/2022/12/19/russian-president-putin-visits-ally-belarus"
NS = {"sm": "http://www.sitemaps.org/schemas/sitemap/0.9", "news": "http://www.google.com/schemas/sitemap-news/0.9"}
LD_JSON = re.compile(r'<script type="application/ld\+json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def make_sample() -> ModuleType:
    """data/sample/make_sample.py, imported by path (it is a script, not a package module)."""
    return load_script(SAMPLE / "make_sample.py", "make_sample")


@pytest.fixture(scope="module")
def manifest() -> list[dict[str, Any]]:
    return json.loads((SAMPLE / "manifest.json").read_text("utf-8"))["pages"]


@pytest.fixture(scope="module")
def warc_records() -> list[dict[str, Any]]:
    records = []
    with (SAMPLE / "sample.warc.gz").open("rb") as stream:
        for record in ArchiveIterator(stream):
            records.append({
                "type": record.rec_type, "uri": record.rec_headers.get_header("WARC-Target-URI"),
                "date": record.rec_headers.get_header("WARC-Date"),
                "status": record.http_headers.get_statuscode() if record.http_headers else None,
                "protocol": record.http_headers.protocol if record.http_headers else None,
                "content_type": record.http_headers.get_header("Content-Type") if record.http_headers else None,
                "body": record.content_stream().read(),
            })
    return records


def articles(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in manifest if p["kind"] == "article"]


def page_text(entry: dict[str, Any]) -> str:
    return (SAMPLE / entry["file"]).read_bytes().decode(entry["charset"])


# --------------------------------------------------------------------------- consistency

def test_corpus_size_and_variety(manifest: list[dict[str, Any]]) -> None:
    assert len(articles(manifest)) >= 34
    assert len({p["outlet"] for p in articles(manifest)}) >= 4
    assert sum(p["kind"] == "not_article" for p in manifest) >= 2
    assert all(p["url"].split("/")[2].endswith(".example") for p in manifest)
    assert len({p["url"] for p in manifest}) == len(manifest)
    assert [p["url"] for p in manifest] == sorted(p["url"] for p in manifest)


def test_manifest_files_are_exactly_the_site_files(manifest: list[dict[str, Any]]) -> None:
    on_disk = {p.relative_to(SAMPLE).as_posix() for p in (SAMPLE / "site").rglob("*") if p.is_file()}
    assert on_disk == {p["file"] for p in manifest}


def test_warc_has_warcinfo_then_one_response_per_page(warc_records: list[dict[str, Any]],
                                                      manifest: list[dict[str, Any]]) -> None:
    assert warc_records[0]["type"] == "warcinfo"
    responses = warc_records[1:]
    assert all(r["type"] == "response" for r in responses)
    assert [r["uri"] for r in responses] == [p["url"] for p in manifest]
    for record, entry in zip(responses, manifest):
        assert record["status"] == "200" and record["protocol"] == "HTTP/1.1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
        assert record["body"] == (SAMPLE / entry["file"]).read_bytes(), entry["url"]
        expected = "text/html; charset=utf-8" if entry["charset"] == "utf-8" else "text/html"
        assert record["content_type"] == expected


def test_warc_is_one_gzip_member_per_record(warc_records: list[dict[str, Any]]) -> None:
    data, members = (SAMPLE / "sample.warc.gz").read_bytes(), 0
    while data:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        inflater.decompress(data)
        assert inflater.eof
        data, members = inflater.unused_data, members + 1
    assert members == len(warc_records)


def test_feed_lists_the_articles_only(manifest: list[dict[str, Any]]) -> None:
    raw = (SAMPLE / "feed.xml").read_bytes()
    channel = ET.fromstring(raw).find("channel")
    assert channel is not None
    items = channel.findall("item")
    assert {i.findtext("link") for i in items} == {p["url"] for p in articles(manifest)}
    for item in items:
        for tag in ("guid", "title", "pubDate", "category"):
            assert (item.findtext(tag) or "").strip(), (tag, item.findtext("link"))
    parsed = feedparser.parse(raw)
    assert not parsed.bozo
    by_url = {p["url"]: p for p in manifest}
    for entry in parsed.entries:
        assert entry.title == by_url[entry.link]["title"]
        assert entry.published_parsed is not None and entry.id


def test_sitemap_lists_every_page_and_news_only_for_articles(manifest: list[dict[str, Any]]) -> None:
    root = ET.parse(SAMPLE / "sitemap.xml").getroot()
    urls = {u.findtext("sm:loc", namespaces=NS): u for u in root.findall("sm:url", NS)}
    assert set(urls) == {p["url"] for p in manifest}
    for entry in manifest:
        url = urls[entry["url"]]
        assert url.findtext("sm:lastmod", namespaces=NS)
        news = url.find("news:news", NS)
        assert (news is not None) == (entry["kind"] == "article")
        if news is not None:
            assert news.findtext("news:title", namespaces=NS) == entry["title"]
            assert news.findtext("news:publication_date", namespaces=NS) == entry["published"]


def test_regenerating_reproduces_every_file_byte_for_byte(make_sample: ModuleType, tmp_path: Path,
                                                          manifest: list[dict[str, Any]]) -> None:
    make_sample.build(tmp_path)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([p["file"] for p in manifest] + ["feed.xml", "manifest.json", "sample.warc.gz",
                                                                 "sitemap.xml"])
    for name in written:
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), name


def test_corpus_stays_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 2_000_000


# --------------------------------------------------------------------------- the pages themselves

def test_articles_have_4_to_12_paragraphs_of_150_to_1200_words(make_sample: ModuleType) -> None:
    pages = [p for p in make_sample.load_pages() if p.is_article]
    for page in pages:
        assert 4 <= len(page.paragraphs) <= 12, page.url
        assert 150 <= page.words <= 1200, page.url
    assert max(p.words for p in pages) > 900 and min(p.words for p in pages) < 200


def test_every_page_has_its_canonical_link(manifest: list[dict[str, Any]]) -> None:
    for entry in manifest:
        assert f'<link rel="canonical" href="{html.escape(entry["url"])}">' in page_text(entry)


def test_jsonld_on_most_articles_and_matches_the_manifest(manifest: list[dict[str, Any]]) -> None:
    with_ld = 0
    for entry in articles(manifest):
        blocks = [json.loads(b) for b in LD_JSON.findall(page_text(entry))]
        assert bool(blocks) == entry["has_jsonld"], entry["url"]
        if not blocks:
            continue
        with_ld += 1
        data = blocks[0]
        article = next(n for n in data.get("@graph", [data]) if n["@type"] == "NewsArticle")
        assert article["headline"] == entry["title"]
        assert article["datePublished"] == entry["published"] and article["datePublished"][-6] in "+-"
        assert [a["name"] for a in article["author"]] == entry["authors"]
        assert article["publisher"]["name"] and article["articleSection"] and article["keywords"]
    assert len(articles(manifest)) > with_ld >= 0.7 * len(articles(manifest))


def test_the_metadata_variations_are_present(manifest: list[dict[str, Any]]) -> None:
    texts = {e["url"]: page_text(e) for e in articles(manifest)}
    visible_only = [e for e in articles(manifest) if not e["has_jsonld"] and not e["has_meta"]]
    assert visible_only
    for entry in visible_only:  # no machine-readable date anywhere, and none in the URL either
        text = texts[entry["url"]]
        assert "published_time" not in text and "<time" not in text and entry["published"][:4] not in entry["url"]
        assert "Published: 9 November 2026" in text
    assert any(len(e["authors"]) == 2 and f"By {e['authors'][0]} and {e['authors'][1]}" in texts[e["url"]]
               for e in articles(manifest))
    assert any(re.search(r"By [^<]+, Senior Correspondent<", t) for t in texts.values())
    assert any(f"<title>{html.escape(e['title'], quote=False)} | " in texts[e["url"]] for e in articles(manifest))
    assert any(f"<title>{html.escape(e['title'], quote=False)} - " in texts[e["url"]] for e in articles(manifest))
    assert sum('property="og:title"' in t for t in texts.values()) >= 0.8 * len(texts)


def test_cp1251_page_is_declared_only_in_the_page(manifest: list[dict[str, Any]],
                                                  warc_records: list[dict[str, Any]]) -> None:
    (entry,) = [p for p in manifest if p["charset"] != "utf-8"]
    raw = (SAMPLE / entry["file"]).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("cp1251")
    assert entry["charset"] == "windows-1251" and entry["language"] == "ru"
    assert '<meta charset="windows-1251">' in text and entry["title"] in text
    assert re.search("[а-яё]{5,}", entry["first_paragraph"])
    (record,) = [r for r in warc_records if r["uri"] == entry["url"]]
    assert "charset" not in record["content_type"]


def test_non_article_pages_are_not_in_the_feed_and_not_marked_up_as_articles(
        manifest: list[dict[str, Any]]) -> None:
    feed = (SAMPLE / "feed.xml").read_text("utf-8")
    for entry in (p for p in manifest if p["kind"] == "not_article"):
        assert f"<link>{entry['url']}</link>" not in feed
        assert "application/ld+json" not in page_text(entry) and 'og:type" content="article' not in page_text(entry)


def test_wire_story_is_carried_three_ways(make_sample: ModuleType, manifest: list[dict[str, Any]]) -> None:
    carried = [e for e in manifest if e["wire_story"]]
    assert len(carried) == 3 and len({e["wire_id"] for e in carried}) == 1
    assert len({e["outlet"] for e in carried}) == 3 and len({e["title"] for e in carried}) == 3
    assert {e["wire_variant"] for e in carried} == {"local_intro", "trimmed", "edited"}
    _, agency = make_sample.parse_source((SAMPLE / "src" / "wire" / "north-sea-grid.txt").read_text("utf-8"))
    by_variant = {e["wire_variant"]: e for e in carried}
    assert by_variant["trimmed"]["last_paragraph"] == agency[-3]
    assert by_variant["local_intro"]["first_paragraph"] not in agency
    assert by_variant["local_intro"]["last_paragraph"] == agency[-1]
    edited = page_text(by_variant["edited"])
    assert sum(p in edited for p in agency) < len(agency) - 2  # a few paragraphs reworded
    assert "(Continental Press)" in edited


# --------------------------------------------------------------------------- the seed article

def seed_paragraphs(make_sample: ModuleType) -> list[str]:
    _, paragraphs = make_sample.parse_source(
        (SAMPLE / "src" / "kestrelnews" / "putin-visits-belarus.txt").read_text("utf-8"))
    return paragraphs


def test_seed_body_is_verbatim(make_sample: ModuleType) -> None:
    paragraphs = seed_paragraphs(make_sample)
    assert paragraphs[0].startswith("Russian President Vladimir Putin made a rare trip")
    assert paragraphs[-1] == "The Associated Press contributed to this report."
    if SHARED_SEED.exists():  # the scraped original, outside the repo
        original = SHARED_SEED.read_text("utf-8")
        assert all(p in original for p in paragraphs)


def test_seed_page_in_sample_has_the_scraped_furniture(make_sample: ModuleType,
                                                       manifest: list[dict[str, Any]]) -> None:
    (entry,) = [p for p in manifest if p["url"] == SEED_URL]
    text = page_text(entry)
    assert all(f"<p>{html.escape(p, quote=False)}</p>" in text for p in seed_paragraphs(make_sample))
    for furniture in ("By Web Staff", "December 19, 2022", "share", "<figcaption>Russian President Vladimir Putin walks",
                      "Sign up for Kestrel Daily", "What you need to know, summarized in one email.",
                      "Comments (3)", "Related Stories"):
        assert furniture in text, furniture
    assert entry["published"].startswith("2022-12-19") and entry["authors"] == ["Web Staff"]


def test_seed_fixture_is_a_full_news_page(make_sample: ModuleType) -> None:
    text = SEED_FIXTURE.read_text("utf-8")
    assert all(f"<p>{html.escape(p, quote=False)}</p>" in text for p in seed_paragraphs(make_sample))
    for furniture in ("By <a", ">Web Staff</a>", ">December 19, 2022<", "share", "<figcaption",
                      "Sign up for Meridian 12 Daily", '<h2 class="comments-title">Comments</h2>',
                      "Related Stories", "<nav", "<footer"):
        assert furniture in text, furniture
    (data,) = [json.loads(b) for b in LD_JSON.findall(text)]
    assert data["headline"] == "Russian President Putin Visits Ally Belarus"
    assert data["datePublished"].startswith("2022-12-19") and data["publisher"]["name"] == "Meridian 12 News"
    assert '<meta property="og:site_name" content="Meridian 12 News">' in text
    assert SEED_FIXTURE.read_text("utf-8") != page_text({"file": f"site/{SEED_URL.split('//')[1]}.html",
                                                         "charset": "utf-8"})
