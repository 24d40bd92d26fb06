"""`newsflow forget`: rules, rows, raw pages, search index and clusters; later runs skip the rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner
from warcio.archiveiterator import ArchiveIterator

from flows.cli import app
from flows.forget import forget
from tasks import load
from tasks.archive import RawWriter, raw_writer, read_raw, tombstone
from tasks.dedupe import Forgotten, skip_forgotten
from tasks.normalise import article_id, canonical_url, content_hash, domain_of
from tasks.pipeline import prepare_batch
from tasks.records import Article, Extracted, SourceKind, State
from tasks.settings import Settings

FETCHED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WIRE = ("NORTH HAVEN (Continental Press) - Nine governments signed an agreement on Tuesday to link their "
        "offshore wind farms through a shared grid of undersea cables, a project officials said would cost "
        "about 40 billion euros and take until the middle of the next decade to complete. The deal commits "
        "each country to build its share of converter stations and to open its market to power traded "
        "through the hub, which engineers say will smooth out the swings in output that come with the weather.")
LIVE = ("Marmalade ferries resumed sailing across the estuary on Sunday after a week of storms kept the "
        "quinceberry fleet in harbour, the operator said, adding that timetables would return to normal by Friday.")
LOCAL = ("The town council approved a new cycle lane along the canal towpath on Thursday, after residents "
         "collected more than two thousand signatures asking for a safer route to the railway station.")


def _page(writer: RawWriter, url: str, text: str, published: datetime = FETCHED) -> Article:
    """A stored page as the pipeline hands it to the load: archived, extracted and normalised."""
    html = f"<html><body><article><p>{text}</p></article></body></html>".encode()
    ref = writer.write(url, 200, "OK", [("Content-Type", "text/html")], html, FETCHED)
    canonical = canonical_url(url)
    return Article(url=url, source="feed-a", source_kind=SourceKind.FEED, final_url=url, http_status=200,
                   fetched_at=FETCHED, raw=ref, content_type="text/html",
                   extracted=Extracted(text=text, title="Title", extractor_version="test-1"),
                   canonical_url=canonical, article_id=article_id(canonical), domain=domain_of(url),
                   title="Title", published_at=published, language="en", word_count=len(text.split()),
                   content_hash=content_hash(text))


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Article]]:
    """wire.example's story and its copy on copy.example (one cluster, wire.example first), a page on
    a subdomain live.wire.example, a local story on keep.example, and a failed URL on wire.example."""
    monkeypatch.setenv("NEWSFLOW_RAW_DIR", str(tmp_path / "raw"))
    db = tmp_path / "news.duckdb"
    load.ensure_schema(db)
    with raw_writer(tmp_path / "raw") as writer:
        pages = {"wire": _page(writer, "https://www.wire.example/story", WIRE),
                 "copy": _page(writer, "https://copy.example/story", WIRE + " Officials declined to comment.",
                               FETCHED.replace(hour=14)),  # ran two hours later
                 "live": _page(writer, "https://live.wire.example/ferries", LIVE),
                 "keep": _page(writer, "https://keep.example/cycle-lane", LOCAL)}
    load.load_batch(db, "run-1", list(pages.values()))
    failed = Article(url="https://wire.example/gone", source="feed-a", source_kind=SourceKind.FEED)
    load.load_batch(db, "run-1", [failed.finish(State.FAILED, "http-500")])
    load.refresh_search(db)
    return db, pages


def _rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def _archived(raw_dir: Path) -> tuple[list[str], int]:
    """The response records' URLs in the raw store, and how many removal notes it holds."""
    urls, notes = [], 0
    for path in sorted(raw_dir.rglob("*.warc.gz")):
        with path.open("rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type == "response":
                    urls.append(record.rec_headers.get_header("WARC-Target-URI"))
                else:
                    notes += b"removed" in record.content_stream().read()
    return sorted(urls), notes


def test_forgetting_a_domain_removes_its_rows_raw_pages_and_words(archive, tmp_path: Path) -> None:
    db, pages = archive
    assert _rows(db, f"SELECT cluster_id FROM articles WHERE article_id = '{pages['copy'].article_id}'") == [
        (pages["wire"].article_id,)]  # the copy is clustered under the wire story
    report = forget(db, [], ["https://wire.example/"], "publisher opt-out")

    kept = {pages["copy"].article_id, pages["keep"].article_id}
    assert {a for (a,) in _rows(db, "SELECT article_id FROM articles")} == kept
    assert report.removed["articles"] == 2 and report.removed["fetches"] == 3  # two articles and the failed URL
    assert not _rows(db, "SELECT url FROM fetches WHERE url LIKE '%wire.example%'")
    assert {a for (a,) in _rows(db, "SELECT DISTINCT article_id FROM url_aliases")} == kept
    assert {a for (a,) in _rows(db, "SELECT article_id FROM article_signatures")} <= kept
    # the copy no longer hangs on a forgotten article: it is its own cluster again
    assert _rows(db, f"SELECT cluster_id FROM articles WHERE article_id = '{pages['copy'].article_id}'") == [
        (pages["copy"].article_id,)]
    # the raw pages are overwritten in place: the others stay where the rows say they are
    assert _archived(tmp_path / "raw") == (["https://copy.example/story", "https://keep.example/cycle-lane"], 2)
    assert len(report.erased.records) == 2 and not report.erased.unreadable
    assert read_raw(pages["keep"].raw).url == "https://keep.example/cycle-lane"
    # the search index no longer holds the forgotten texts' words
    assert load.search(db, "quinceberry")[1] == []
    assert {a for (a,) in _rows(db, "SELECT name FROM fts_main_articles.docs")} == kept  # rebuilt without them
    assert not _rows(db, "SELECT term FROM fts_main_articles.dict WHERE term LIKE 'quinceberr%'")
    assert load.search(db, "towpath")[1]
    assert _rows(db, "SELECT kind, value, reason FROM forgotten") == [("domain", "wire.example", "publisher opt-out")]

    again = forget(db, [], ["wire.example"], "publisher opt-out")  # a rerun finds nothing more to do
    assert (again.new_rules, sum(again.removed.values()), again.erased.records) == (0, 0, [])


def test_a_url_rule_forgets_that_page_under_any_of_its_variants(archive, tmp_path: Path) -> None:
    db, pages = archive
    report = forget(db, ["HTTPS://keep.example/cycle-lane?utm_source=newsletter#top"], [])
    assert report.removed["articles"] == 1
    assert pages["keep"].article_id not in {a for (a,) in _rows(db, "SELECT article_id FROM articles")}
    assert len(_rows(db, "SELECT * FROM articles")) == 3  # nothing else on the site or elsewhere
    assert "https://keep.example/cycle-lane" not in _archived(tmp_path / "raw")[0]


def test_forgotten_urls_are_skipped_before_fetching_and_at_load(archive) -> None:
    db, pages = archive
    # Loopback outside the allow-list: were the rule ignored, the SSRF guard would refuse the
    # request with another reason, and no traffic leaves this machine either way.
    forget(db, ["https://keep.example/cycle-lane"], ["127.0.0.2"])
    later = [Article(url="http://127.0.0.2:9/story", source="feed-b", source_kind=SourceKind.FEED),
             Article(url="https://keep.example/cycle-lane?utm_medium=social", source="feed-b",
                     source_kind=SourceKind.FEED)]
    prepared = prepare_batch(db, later, Settings())
    assert [(r.state, r.reason) for r in prepared] == [(State.SKIPPED, "forgotten")] * 2
    # a batch fetched before the rule came is stopped at load
    loaded = load.load_batch(db, "run-2", [pages["keep"].replace(source="feed-b")])
    assert [(r.state, r.reason) for r in loaded] == [(State.SKIPPED, "forgotten")]
    assert not _rows(db, f"SELECT 1 FROM articles WHERE article_id = '{pages['keep'].article_id}'")


@pytest.mark.parametrize(("url", "covered"), [
    ("https://wire.example/a", True),
    ("https://www.wire.example/a", True),  # hosts compare without "www."
    ("https://live.wire.example/a", True),  # subdomains are covered
    ("https://notwire.example/a", False),  # a longer name is another domain
    ("https://copy.example/story?utm_campaign=x", True),  # a variant of a forgotten URL
    ("https://copy.example/other", False),
])
def test_what_a_rule_covers(url: str, covered: bool) -> None:
    rules = Forgotten(urls=frozenset({canonical_url("https://copy.example/story")}), domains=frozenset({"wire.example"}))
    assert rules.covers(url) is covered
    record = Article(url=url, source="s", source_kind=SourceKind.URLS)
    assert (skip_forgotten([record], rules)[0].state is State.SKIPPED) is covered


def test_a_removal_note_has_the_length_of_the_record_it_replaces() -> None:
    import gzip

    for length in (300, 4_000, 70_000):
        member = tombstone(length, "removed")
        assert len(member) == length and b"WARC-Type: metadata" in gzip.decompress(member)
    with pytest.raises(ValueError, match="too short"):
        tombstone(50, "removed")


def test_forget_command_needs_something_to_forget(archive) -> None:
    db, _ = archive
    result = CliRunner().invoke(app, ["forget", "--db", str(db)])
    assert result.exit_code == 2 and "nothing to forget" in result.output
    result = CliRunner().invoke(app, ["forget", "--db", str(db), "--domain", "wire.example", "--reason", "opt-out"])
    assert result.exit_code == 0 and "removed 2 articles" in result.output


def test_a_source_on_a_forgotten_domain_is_not_requested(archive, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.sources import discover_sources, source_specs
    from tests.servers import serve

    db, _ = archive
    monkeypatch.setenv("NEWSFLOW_ALLOW_PRIVATE_HOSTS", "127.0.0.1")
    settings = Settings(cache_dir=tmp_path / "cache")
    feed = (200, {"Content-Type": "application/rss+xml"},
            b"<rss version='2.0'><channel><title>t</title><item><link>http://127.0.0.1/a</link></item></channel></rss>")
    with serve({"/rss": feed, "/robots.txt": (404, {}, b"")}) as site:
        specs = source_specs([site.url("/rss")], None, None, None, None, settings, use_defaults=False)
        forget(db, [], ["127.0.0.1"])
        discovery = discover_sources(specs, settings, db)
    [state] = discovery.states
    assert list(discovery.candidates()) == [] and site.paths() == []
    assert state["last_status"] == "error" and "forgotten" in state["last_error"]


def test_a_truncated_archive_file_does_not_stop_the_erasure(tmp_path: Path) -> None:
    """A file a crash cut short mid-record: the records before the cut are still found and erased."""
    import gzip

    from tasks.archive import erase_pages

    with raw_writer(tmp_path) as writer:
        first = writer.write("https://gone.example/a", 200, "OK", [], b"<p>first</p>" * 50, FETCHED)
        second = writer.write("https://kept.example/b", 200, "OK", [], b"<p>second</p>" * 50, FETCHED)
    path = Path(first.path)
    path.write_bytes(path.read_bytes()[: second.offset + second.length // 2])
    erased = erase_pages(tmp_path, lambda uri: "gone.example" in uri, "removed")
    assert erased.records == [(first.path, first.offset)]
    with path.open("rb") as stream:
        stream.seek(first.offset)
        assert b"WARC-Type: metadata" in gzip.decompress(stream.read(first.length))
    assert path.stat().st_size == second.offset + second.length // 2  # nothing else written


def test_forgetting_takes_an_articles_earlier_versions_and_revisits_with_it(archive, tmp_path: Path) -> None:
    db, pages = archive
    with raw_writer(tmp_path / "raw") as writer:  # a revisit: the wire story grew a line, the local one is the same
        revised = _page(writer, "https://www.wire.example/story", WIRE + "\nThe ministers meet again on Friday.")
        same = _page(writer, "https://keep.example/cycle-lane", LOCAL)
    assert load.record_revisits(db, "run-2", [revised, same]) == {"changed": 1, "unchanged": 1}
    assert _rows(db, "SELECT article_id, version FROM article_versions") == [(pages["wire"].article_id, 1)]

    report = forget(db, [], ["wire.example"])
    assert (report.removed["article_versions"], report.removed["revisits"]) == (1, 1)
    assert not _rows(db, "SELECT * FROM article_versions")
    assert _rows(db, "SELECT article_id, outcome FROM revisits") == [(pages["keep"].article_id, "unchanged")]
    # both versions' raw pages are overwritten
    assert _archived(tmp_path / "raw")[0] == ["https://copy.example/story", "https://keep.example/cycle-lane",
                                              "https://keep.example/cycle-lane"]
