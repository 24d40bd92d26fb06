"""The operator's views, search and export: their arithmetic on a hand-made database, and the
bundled sample ingested once per session (`sample_db`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tasks import load
from tasks.records import Article, Extracted, SourceKind
from tasks.views import SearchUnavailableError, fts_extension_file
from tests.conftest import SAMPLE_ARTICLES

REPO = Path(__file__).resolve().parent.parent
SEED_URL = "https://www.kestrelnews.example/news/world/2022/12/19/russian-president-putin-visits-ally-belarus"


# ---------------------------------------------------------------- views on a hand-made database

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def small_db(fresh_db: Path) -> Iterator[Path]:
    """Two sources: `good` (3 loaded, 1 duplicate; one article undated, one paywalled) and `bad` (2
    failed, 1 empty)."""
    load.ensure_schema(fresh_db)
    with load.transaction(fresh_db) as con:
        fetches = [("r1", f"https://good.example/{i}", "good", "loaded", f"a{i}") for i in range(3)]
        fetches += [("r1", "https://good.example/dup", "good", "duplicate", "a0"),
                    ("r1", "https://bad.example/1", "bad", "failed", None),
                    ("r1", "https://bad.example/2", "bad", "failed", None),
                    ("r1", "https://bad.example/3", "bad", "not_article", None)]
        con.executemany("INSERT INTO fetches (run_id, url, source, state, article_id, recorded_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [(*f, NOW) for f in fetches])
        lags = [timedelta(hours=1), timedelta(hours=3), None]
        con.executemany(
            "INSERT INTO articles (article_id, url, canonical_url, source, domain, title, text, word_count, "
            "published_at, fetched_at) VALUES (?, ?, ?, 'good', 'good.example', ?, ?, 100, ?, ?)",
            [(f"a{i}", f"https://good.example/{i}", f"https://good.example/{i}", f"Title {i}",
              "harbour ferry timetable" if i == 1 else "council housing plan",
              NOW - lag if lag else None, NOW) for i, lag in enumerate(lags)])
        # a2 marks itself paywalled, a1 free, a0 says nothing (unknown, not paywalled)
        con.execute("UPDATE articles SET free_access = (article_id = 'a1') WHERE article_id IN ('a1', 'a2')")
        con.execute("INSERT INTO sources (name, kind, location, last_status) VALUES "
                    "('good', 'feed', 'g.xml', 'ok'), ('bad', 'feed', 'b.xml', 'ok'), "
                    "('silent', 'feed', 's.xml', 'failed')")
    yield fresh_db


def test_source_health_rates(small_db: Path) -> None:
    columns, rows = load.query(small_db, "SELECT * FROM source_health")
    health = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    assert set(health) == {"good", "bad", "silent"}  # a source with no URL at all still shows
    good, bad = health["good"], health["bad"]
    assert (good["urls"], good["loaded"], good["success_rate"], good["duplicate_rate"]) == (4, 3, 1.0, 0.25)
    assert good["missing_date_rate"] == pytest.approx(0.333)
    assert good["paywalled_rate"] == pytest.approx(0.333)
    assert good["median_lag"] == timedelta(hours=2)
    assert good["last_success"] == NOW
    assert (bad["success_rate"], bad["empty_text_rate"], bad["failed"]) == (pytest.approx(0.333), pytest.approx(0.333), 2)
    assert bad["last_success"] == NOW  # the not_article page was fetched fine
    assert health["silent"]["urls"] == 0 and health["silent"]["last_status"] == "failed"


def test_a_feed_whose_articles_stop_coming_is_silent(fresh_db: Path) -> None:
    """Silence is judged against each source's own rhythm, at its last check, and only for feeds
    and sitemaps: an hourly feed quiet for two days is silent, one quiet for 11 hours (a night) is
    not, nor is one quiet for two days when newsflow last read it an hour after its newest article;
    a feed of twenty articles each weekday is not silent over a weekend, and is by Wednesday."""
    load.ensure_schema(fresh_db)
    hourly = [NOW - timedelta(hours=h) for h in range(20)]
    friday = datetime(2026, 11, 13, 17, 30, tzinfo=UTC)
    weekdays = [day + timedelta(minutes=30 * k) for d in range(28)
                if (day := datetime(2026, 10, 17, 8, tzinfo=UTC) + timedelta(days=d)).weekday() < 5
                for k in range(20)]
    assert max(weekdays) == friday
    sources = {  # name: (kind, articles' publication times, last check)
        "gone": ("feed", [t - timedelta(days=2) for t in hourly], NOW),
        "night": ("feed", [t - timedelta(hours=11) for t in hourly], NOW),
        "unread": ("sitemap", [t - timedelta(days=2) for t in hourly], NOW - timedelta(days=2) + timedelta(hours=1)),
        "archive": ("warc", [t - timedelta(days=2) for t in hourly], NOW),
        "few": ("feed", [t - timedelta(days=2) for t in hourly[:5]], NOW),
        "weekend": ("feed", weekdays, datetime(2026, 11, 16, 7, tzinfo=UTC)),
        "wednesday": ("feed", weekdays, datetime(2026, 11, 18, 12, tzinfo=UTC)),
    }
    with load.transaction(fresh_db) as con:
        for name, (kind, times, checked) in sources.items():
            con.executemany(
                "INSERT INTO articles (article_id, url, canonical_url, source, text, published_at, fetched_at) "
                "VALUES (?, ?, ?, ?, 'text', ?, ?)",
                [(f"{name}{i}", f"https://{name}.example/{i}", f"https://{name}.example/{i}", name, t, checked)
                 for i, t in enumerate(times)])
            con.execute("INSERT INTO sources (name, kind, location, last_checked_at, last_status) "
                        "VALUES (?, ?, ?, ?, 'ok')", [name, kind, f"{name}.xml", checked])
    columns, rows = load.query(fresh_db, "SELECT source, longest_gap, quiet_for, silent FROM source_health")
    health = {row[0]: row[1:] for row in rows}
    assert health["gone"] == (timedelta(hours=1), timedelta(days=2), True)
    assert health["night"] == (timedelta(hours=1), timedelta(hours=11), False)  # under the 12-hour floor
    assert health["unread"] == (timedelta(hours=1), timedelta(hours=1), False)  # judged at its last check
    assert health["archive"] == (timedelta(hours=1), None, None)  # an archive has no rhythm to keep
    assert health["few"] == (None, timedelta(days=2), None)  # 4 gaps: too few for a rhythm
    weekend = timedelta(hours=62, minutes=30)  # Friday 17:30 to Monday 08:00
    assert health["weekend"] == (weekend, timedelta(hours=61, minutes=30), False)
    assert health["wednesday"] == (weekend, timedelta(days=4, hours=18, minutes=30), True)  # past 1.5 weekends


def test_stats_since_filters(small_db: Path) -> None:
    later = load.stats(small_db, since=(NOW + timedelta(days=1)).date().isoformat())
    columns, rows = later["source_health"]
    assert all(row[columns.index("urls")] == 0 for row in rows)
    assert later["daily_articles"][1] == []
    everything = load.stats(small_db)
    _, days = everything["daily_articles"]
    # undated article counted on its fetch day; the others on their publication day
    assert sum(row[2] for row in days) == 3 and {row[1] for row in days} == {"good"}


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_search_ranks_and_filters(small_db: Path) -> None:
    assert load.refresh_search(small_db) == 3
    columns, rows = load.search(small_db, "ferry")
    assert [r[columns.index("url")] for r in rows] == ["https://good.example/1"]
    assert load.search(small_db, "housing", source="good.example")[1]
    assert load.search(small_db, "housing", source="other")[1] == []
    assert len(load.search(small_db, "council", limit=1)[1]) == 1


def _built_at(db: Path) -> datetime:
    """When the search index was last built."""
    return load.query(db, "SELECT built_at FROM search_index_state")[1][0][0]


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_search_index_is_rebuilt_only_when_articles_changed(small_db: Path) -> None:
    load.refresh_search(small_db)
    first = _built_at(small_db)
    assert load.refresh_search(small_db) == 3
    assert _built_at(small_db) == first  # nothing changed: the index was kept
    assert load.search(small_db, "ferry")[1]

    con = duckdb.connect(str(small_db))
    con.execute("UPDATE articles SET text = 'A lighthouse keeper retires.' WHERE url = 'https://good.example/1'")
    con.close()
    assert load.refresh_search(small_db) == 3
    assert _built_at(small_db) > first
    assert load.search(small_db, "ferry")[1] == []
    assert [r[-1] for r in load.search(small_db, "lighthouse")[1]] == ["https://good.example/1"]


def _add_article(db: Path, article_id: str, title: str, text: str) -> None:
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO articles (article_id, url, canonical_url, source, domain, title, text, word_count, "
                "fetched_at) VALUES (?, ?, ?, 'good', 'good.example', ?, ?, 10, ?)",
                [article_id, f"https://good.example/{article_id}", f"https://good.example/{article_id}", title, text, NOW])
    con.close()


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_articles_loaded_after_the_index_are_found_without_rebuilding_it(small_db: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSFLOW_SEARCH_UNINDEXED_MAX", "2")
    assert load.refresh_search(small_db) == 3
    first = _built_at(small_db)
    _add_article(small_db, "a3", "Ferry strike ends", "The ferry crews returned to the harbour on Monday.")
    _add_article(small_db, "a4", "Ferry fares", "Ferry fares rise again.")
    assert load.refresh_search(small_db) == 5  # two wait outside the index: no rebuild
    assert _built_at(small_db) == first
    urls = [r[-1] for r in load.search(small_db, "ferry")[1]]
    assert set(urls) == {"https://good.example/1", "https://good.example/a3", "https://good.example/a4"}
    assert load.search(small_db, "ferry", source="other")[1] == []  # filters apply to them too
    assert load.search(small_db, "ferry", since="2100-01-01")[1] == []
    assert load.search(small_db, "lighthouse")[1] == []
    _add_article(small_db, "a5", "Lighthouse", "A lighthouse keeper retires.")
    assert load.refresh_search(small_db) == 6  # three wait: more than allowed, so it is rebuilt
    assert _built_at(small_db) > first
    assert load.query(small_db, "SELECT count(*) FROM fts_main_articles.docs")[1] == [(6,)]
    assert [r[-1] for r in load.search(small_db, "lighthouse")[1]] == ["https://good.example/a5"]


def _revised(article_id: str, title: str, text: str) -> Article:
    """A new version of a stored article, as a revisit or a re-extraction hands it to the load."""
    return Article(url=f"https://good.example/{article_id}", source="good", source_kind=SourceKind.FEED,
                   article_id=article_id, title=title, word_count=len(text.split()),
                   extracted=Extracted(text=text, title=title, extractor_version="test"))


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_a_revised_article_is_searched_in_its_new_version_without_rebuilding_the_index(
        small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed indexed article is scored on the fly (`search_stale`) until more than
    NEWSFLOW_SEARCH_UNINDEXED_MAX wait; forgetting one rebuilds the index (its old words are in it)."""
    monkeypatch.setenv("NEWSFLOW_SEARCH_UNINDEXED_MAX", "1")
    load.refresh_search(small_db)
    first = _built_at(small_db)
    assert load.update_extractions(small_db, "r2", [_revised("a1", "Lighthouse", "A lighthouse keeper retires.")]) == 1
    assert load.refresh_search(small_db) == 3 and _built_at(small_db) == first  # one waits: no rebuild
    assert load.search(small_db, "ferry")[1] == []  # the indexed first version is not what is searched
    assert [r[-1] for r in load.search(small_db, "lighthouse")[1]] == ["https://good.example/1"]  # once
    assert load.update_extractions(small_db, "r3", [_revised("a1", "Lighthouse", "The lighthouse keeper retires.")]) == 1
    assert load.refresh_search(small_db) == 3 and _built_at(small_db) == first  # still the one article
    assert [r[-1] for r in load.search(small_db, "lighthouse keeper")[1]] == ["https://good.example/1"]
    assert load.update_extractions(small_db, "r4", [_revised("a2", "Allotments", "New allotments open.")]) == 1
    assert load.refresh_search(small_db) == 3 and _built_at(small_db) > first  # two wait: rebuilt
    assert load.query(small_db, "SELECT count(*) FROM search_stale")[1] == [(0,)]
    assert [r[-1] for r in load.search(small_db, "allotments")[1]] == ["https://good.example/2"]
    assert [r[-1] for r in load.search(small_db, "lighthouse")[1]] == ["https://good.example/1"]

    rebuilt = _built_at(small_db)
    load.update_extractions(small_db, "r5", [_revised("a1", "Lighthouse", "A lighthouse keeper and a ferry.")])
    load.add_forgotten(small_db, ["https://good.example/1"], [], "takedown")
    load.delete_forgotten(small_db)
    assert load.refresh_search(small_db) == 2 and _built_at(small_db) > rebuilt
    assert load.query(small_db, "SELECT count(*) FROM fts_main_articles.docs WHERE name = 'a1'")[1] == [(0,)]


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_unindexed_articles_are_scored_as_the_index_scores_them(small_db: Path) -> None:
    """The same BM25 as fts's match_bm25 under the same statistics: articles taken out of a built
    index's document list get the scores the index gave them."""
    _add_article(small_db, "a3", "Ferry strike ends", "The ferry crews returned to the harbour, and the "
                 "ferry company said the strike was over. Councillors welcomed the news.")
    _add_article(small_db, "a4", "Housing vote", "The council voted on the housing plan; the ferry was not discussed.")
    load.refresh_search(small_db)
    queries = ["ferry", "council housing", "the harbour ferry strike", "councillors welcomed"]
    indexed = {q: load.search(small_db, q)[1] for q in queries}
    con = duckdb.connect(str(small_db))
    con.execute("DELETE FROM fts_main_articles.docs WHERE name IN ('a1', 'a3', 'a4')")
    con.close()
    for q in queries:
        assert indexed[q]
        assert load.search(small_db, q)[1] == indexed[q]


@pytest.mark.skipif(fts_extension_file() is None, reason="duckdb-extension-fts has no build for this platform")
def test_search_index_is_built_under_its_own_memory_limit(small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("NEWSFLOW_DUCKDB_SEARCH_MEMORY_LIMIT", "64MB")
    # the index statement preceded by one that records the limit it runs under
    monkeypatch.setattr(load, "CREATE_INDEX", "CREATE OR REPLACE TABLE limit_seen AS "
                        f"SELECT current_setting('memory_limit') AS v; {load.CREATE_INDEX}")
    probe = duckdb.connect()

    def rendered(limit: str) -> str:
        probe.execute(f"SET memory_limit = '{limit}'")
        return probe.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    with load.held(small_db):  # as in a flow run: the same open database before and after
        load.refresh_search(small_db)
        assert load.query(small_db, "SELECT v FROM limit_seen")[1] == [(rendered("64MB"),)]
        assert load.query(small_db, "SELECT current_setting('memory_limit')")[1] == [(rendered("300MB"),)]


def test_search_without_extension_says_so(small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.views.fts_extension_file", lambda: None)
    with pytest.raises(SearchUnavailableError, match="duckdb-extension-fts"):
        load.refresh_search(small_db)
    assert load.refresh_search_if_available(small_db) is None  # the flow logs and goes on


def test_views_survive_reopening_and_rerun(small_db: Path) -> None:
    load.ensure_schema(small_db)  # idempotent: CREATE OR REPLACE
    assert load.query(small_db, "SELECT count(*) FROM daily_articles")[1][0][0] >= 1


# ---------------------------------------------------------------- the sample, loaded by the flow


def test_sample_search_finds_the_seed_first(sample_db: Path) -> None:
    columns, rows = load.search(sample_db, "Lukashenko")
    assert rows and rows[0][columns.index("url")] == SEED_URL


def test_sample_stats_show_every_source(sample_db: Path) -> None:
    views = load.stats(sample_db)
    columns, rows = views["source_health"]
    configured = {row[0] for row in load.query(sample_db, "SELECT name FROM sources")[1]}
    assert {row[0] for row in rows} == configured == {"sample"}
    sample = dict(zip(columns, rows[0], strict=True))
    assert sample["loaded"] == SAMPLE_ARTICLES and sample["success_rate"] == 1.0
    assert sum(row[2] for row in views["daily_articles"][1]) == SAMPLE_ARTICLES


def test_sample_export_parquet_partitioned_by_day(sample_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert load.export_parquet(sample_db, out) == SAMPLE_ARTICLES
    assert (out / "date=2022-12-19").is_dir()
    table = pq.read_table(out)  # hive partitions come back as a `date` column
    assert table.num_rows == SAMPLE_ARTICLES
    assert SEED_URL in table.column("url").to_pylist()
    assert load.export_parquet(sample_db, tmp_path / "recent", since="2026-11-15") < SAMPLE_ARTICLES
    with duckdb.connect() as con:  # every file's rows belong to its partition's day
        (bad,) = con.execute(
            "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) "
            "WHERE CAST(timezone('UTC', coalesce(published_at, fetched_at)) AS DATE) <> date",
            [str(out / "**" / "*.parquet")]).fetchone()
    assert bad == 0
