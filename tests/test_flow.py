"""The whole ingest flow through Prefect against a loopback site: feed -> pages -> DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tasks import extract
from tests.conftest import REPO, loopback_path, sample_pages

pytestmark = pytest.mark.usefixtures("prefect_harness", "newsflow_env")

ARTICLE_PAGES = [p for p in sample_pages() if p["kind"] == "article"]
ALL_TABLES = ["articles", "url_aliases", "sources", "fetches", "runs"]


def snapshot(db: Path, table: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_feed_to_duckdb(sample_site, fresh_db: Path):
    from flows.ingest import ingest

    summary = ingest(feeds=[sample_site.url("/feed.xml")], db=str(fresh_db))
    assert [(e["discovered"], e["loaded"]) for e in summary] == [(len(ARTICLE_PAGES), len(ARTICLE_PAGES))]
    assert extract._pool is None  # the workers went once the batches were done, before the index build
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        titles = dict(con.execute("SELECT url, title FROM articles").fetchall())
        fetches = con.execute("SELECT url, state FROM fetches").fetchall()
        russian = con.execute("SELECT text FROM articles WHERE language = 'ru'").fetchone()[0]
    expected = {sample_site.url(loopback_path(p["url"])): p["title"] for p in ARTICLE_PAGES}
    assert titles == expected
    assert sorted(u for u, _ in fetches) == sorted(expected) and {s for _, s in fetches} == {"loaded"}
    assert "мост" in russian  # the windows-1251 page, declared only in <meta>, comes out readable


def test_a_feed_gone_silent_is_said_so_in_the_run_summary(sample_site, fresh_db: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """The sample feed's articles span November 2026 (about one a day, the newest of the 18th,
    none more than ~2 days apart): read on any day after the 21st, it has had no new article for
    more than 1.5 times its longest gap."""
    import flows.report
    from flows.ingest import ingest

    events: list[tuple] = []
    monkeypatch.setattr(flows.report, "emit_event", lambda event, resource, payload: events.append(
        (event, resource["prefect.resource.name"], payload)))
    feed = sample_site.url("/feed.xml")
    [entry] = ingest(feeds=[feed], db=str(fresh_db))
    assert entry["top_reasons"][0].startswith("silent: no new article for ")
    assert "its longest gap in four weeks was" in entry["top_reasons"][0], entry
    [(event, name, payload)] = events
    assert (event, name) == ("newsflow.source.silent", feed)
    assert payload["quiet_for_s"] > 1.5 * payload["longest_gap_s"] > 0
    [entry] = ingest(urls=[sample_site.url(loopback_path(ARTICLE_PAGES[0]["url"]))], db=str(fresh_db))
    assert not any(r.startswith("silent") for r in entry["top_reasons"])  # a URL list keeps no rhythm
    assert len(events) == 1


def test_every_discovered_url_ends_in_one_state(sample_site, fresh_db: Path):
    from flows.ingest import ingest

    pages = [sample_site.url(loopback_path(p["url"])) for p in sample_pages()]
    urls = [*pages, pages[0] + "?utm_source=x&utm_medium=rss", sample_site.url("/missing"),
            "http://127.0.0.2:9/forbidden"]  # 127.0.0.2 is outside the allow-list: refused, never contacted
    ingest(urls=urls, db=str(fresh_db))
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        rows = dict(((u, (s, r)) for u, s, r in con.execute("SELECT url, state, reason FROM fetches").fetchall()))
        run = con.execute("SELECT discovered, loaded + duplicate + not_article + skipped + blocked + failed "
                          "FROM runs").fetchone()
    assert sorted(rows) == sorted(urls)
    assert rows[urls[-1]] == ("skipped", "private-address")
    assert rows[urls[-2]] == ("failed", "http-404")
    assert rows[urls[-3]][0] == "duplicate"
    assert sum(s == "not_article" for s, _ in rows.values()) == len(sample_pages()) - len(ARTICLE_PAGES)
    assert all(r for s, r in rows.values() if s != "loaded")
    assert run == (len(urls), len(urls))


def test_ingesting_again_changes_nothing_but_runs_and_fetches(sample_site, fresh_db: Path):
    from flows.ingest import ingest

    pages = [sample_site.url(loopback_path(p["url"])) for p in ARTICLE_PAGES]
    ingest(feeds=[sample_site.url("/feed.xml")], urls=pages[:5], db=str(fresh_db))
    before = {t: snapshot(fresh_db, t) for t in ALL_TABLES}
    summary = ingest(feeds=[sample_site.url("/feed.xml")], urls=pages[:5], db=str(fresh_db))
    after = {t: snapshot(fresh_db, t) for t in ALL_TABLES}
    for table in ("articles", "url_aliases"):
        assert after[table] == before[table], table
    assert len(after["runs"]) == 2 and len(after["fetches"]) == len(before["fetches"]) + 5
    by_source = {e["source"]: e for e in summary}
    assert by_source["urls"]["duplicate"] == 5  # re-listed URLs cost no fetch: already known
    assert by_source[sample_site.url("/feed.xml")]["discovered"] == 0  # unchanged feed: no work


def test_retry_failed_redrives_transient_failures_only(fresh_db: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.ingest import ingest
    from tests.servers import serve

    monkeypatch.setenv("NEWSFLOW_RETRY_BACKOFF", "0.01")
    page = (Path(__file__).parent / "fixtures" / "seed_article.html").read_bytes()
    routes: dict = {"/story": (503, {"Retry-After": "0"}, b"busy"), "/gone": (404, {}, b"")}
    with serve(routes) as site:
        ingest(urls=[site.url("/story"), site.url("/gone")], db=str(fresh_db))
        routes["/story"] = (200, {"Content-Type": "text/html; charset=utf-8"}, page)
        routes["/gone"] = (200, {"Content-Type": "text/html; charset=utf-8"}, page)
        summary = ingest(retry_failed=True, db=str(fresh_db))
    assert [(e["discovered"], e["loaded"]) for e in summary] == [(1, 1)]  # /story again; /gone (404) stays failed
    last = dict(snapshot_rows(fresh_db, "SELECT url, arg_max(state, recorded_at) FROM fetches GROUP BY url"))
    assert last == {site.url("/story"): "loaded", site.url("/gone"): "failed"}


def snapshot_rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_a_cut_warc_keeps_the_records_before_the_cut_and_says_why(fresh_db: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    from flows.ingest import ingest
    from tasks.sources import iter_warc

    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "10")  # four batches: the file is read while they run
    sample = REPO / "data" / "sample" / "sample.warc.gz"
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(sample.read_bytes()[:-700])  # inside the last record, as an interrupted download is
    before_the_cut = [r.url for r in iter_warc(sample)][:-1]
    [entry] = ingest(warcs=[str(cut)], db=str(fresh_db))
    assert entry["discovered"] == len(before_the_cut)
    assert sorted(u for (u,) in snapshot_rows(fresh_db, "SELECT url FROM fetches")) == sorted(before_the_cut)
    assert snapshot_rows(fresh_db, "SELECT discovered FROM runs") == [(len(before_the_cut),)]
    [(status, error)] = snapshot_rows(fresh_db, "SELECT last_status, last_error FROM sources")
    assert status == "error" and "truncated" in error


def test_a_csv_url_list_lands_with_its_rows_hints(fresh_db: Path, tmp_path: Path):
    from flows.ingest import ingest
    from tests.servers import serve

    page = (Path(__file__).parent / "fixtures" / "seed_article.html").read_bytes()
    with serve({"/story": (200, {"Content-Type": "text/html; charset=utf-8"}, page)}) as site:
        export = tmp_path / "export.csv"
        export.write_text(f"url,title,section\n{site.url('/story')},Putin in Minsk,World;Europe\nnot-a-url,x,y\n")
        [entry] = ingest(urls_file=str(export), db=str(fresh_db))
    assert (entry["discovered"], entry["loaded"]) == (1, 1)
    assert f"{export}:2" in snapshot_rows(fresh_db, "SELECT last_error FROM sources")[0][0]  # the bad row, named
    assert snapshot_rows(fresh_db, "SELECT feed_title, feed_categories FROM articles") == [
        ("Putin in Minsk", ["World", "Europe"])]


def test_a_publishers_tdm_reservation_header_lands_with_the_article(fresh_db: Path):
    """The header is read from the archived response in the extraction worker."""
    from flows.ingest import ingest
    from tests.servers import serve

    page = (Path(__file__).parent / "fixtures" / "seed_article.html").read_bytes()
    routes = {"/reserved": (200, {"Content-Type": "text/html; charset=utf-8", "TDM-Reservation": "1"}, page),
              "/silent": (200, {"Content-Type": "text/html; charset=utf-8"},
                          page.replace(b"Belarus", b"Armenia").replace(b"Lukashenko", b"Pashinyan"))}
    with serve(routes) as site:
        ingest(urls=[site.url("/reserved"), site.url("/silent")], db=str(fresh_db))
    assert snapshot_rows(fresh_db, "SELECT url, tdm_reserved, field_sources['tdm_reserved'] FROM articles ORDER BY url") == [
        (site.url("/reserved"), True, "header"), (site.url("/silent"), None, None)]
    assert snapshot_rows(fresh_db, "SELECT tdm_reserved_rate FROM source_health") == [(0.5,)]


def test_the_summary_artifact_keeps_its_columns_whatever_a_reason_or_a_source_holds():
    from flows.report import COLUMNS, summary_markdown

    entry = {**dict.fromkeys(COLUMNS, 1), "source": "feeds|weird.xml",
             "top_reasons": ["source failed: parse error at <a|b>\nline 2", "http-404 (3)"]}
    header, rule, row = summary_markdown([entry]).splitlines()
    unescaped = lambda line: line.replace("\\|", "").count("|")  # noqa: E731
    assert unescaped(row) == unescaped(header) == len(COLUMNS) + 2
    assert "feeds\\|weird.xml" in row and "<a\\|b> line 2; http-404 (3)" in row
