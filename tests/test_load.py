"""Bulk, idempotent loads: one transaction per batch, one fetches row per URL, identity kept by the DB."""

from __future__ import annotations

import dataclasses
from contextlib import suppress
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tasks import load
from tasks.normalise import article_id, canonical_url
from tasks.records import Article, Extracted, Hints, RawRef, SourceKind, State
from tests.conftest import held_by_another_process

FETCHED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def article(url: str, text: str = "Some story text.", source: str = "feed-a",
            domain: str = "news.example") -> Article:
    canonical = canonical_url(url)
    return Article(
        url=url, source=source, source_kind=SourceKind.FEED,
        hints=Hints(title="Feed title", guid="g-" + url, categories=("World",)),
        final_url=url, http_status=200, fetched_at=FETCHED, elapsed_ms=12, n_bytes=2048,
        content_type="text/html", raw=RawRef("data/raw/x.warc.gz", 0, 100),
        extracted=Extracted(text=text, title="Title", authors=("Jane Roe",), site_name="Gazette",
                            categories=("World",), tags=("t1",), extractor_version="test-1"),
        canonical_url=canonical, article_id=article_id(canonical), domain=domain,
        title="Title", authors=("Jane Roe",), published_at=datetime(2026, 10, 31, 9, 30, tzinfo=UTC),
        language="en", word_count=3, content_hash="hash-" + text,
    )


def table_rows(db: Path, table: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_load_batch_inserts_articles_aliases_and_fetches(fresh_db: Path):
    load.start_run(fresh_db, "run-1", "ingest", {})
    failed = Article(url="https://news.example/gone", source="feed-a",
                     source_kind=SourceKind.FEED).finish(State.FAILED, "http-404")
    final = load.load_batch(fresh_db, "run-1", [article("https://news.example/a"), failed])
    assert [r.state for r in final] == [State.LOADED, State.FAILED]
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        row = con.execute("SELECT url, authors, published_at, cluster_id = article_id, feed_categories, "
                          "first_run_id FROM articles").fetchone()
        fetches = con.execute("SELECT url, state, reason FROM fetches ORDER BY url").fetchall()
        aliases = con.execute("SELECT count(*) FROM url_aliases").fetchone()[0]
    assert row[0] == "https://news.example/a" and row[1] == ["Jane Roe"]
    assert row[2] == datetime(2026, 10, 31, 9, 30, tzinfo=UTC)
    assert row[3] is True and row[4] == ["World"] and row[5] == "run-1"
    assert fetches == [("https://news.example/a", "loaded", None), ("https://news.example/gone", "failed", "http-404")]
    assert aliases >= 1


def test_second_load_of_same_pages_adds_no_article(fresh_db: Path):
    load.ensure_schema(fresh_db)
    batch = [article("https://news.example/a"), article("https://news.example/b", text="Other text.")]
    load.load_batch(fresh_db, "run-1", batch)
    articles_before = table_rows(fresh_db, "articles")
    aliases_before = table_rows(fresh_db, "url_aliases")
    again = load.load_batch(fresh_db, "run-2", batch)
    assert {r.state for r in again} == {State.DUPLICATE}
    assert table_rows(fresh_db, "articles") == articles_before
    assert table_rows(fresh_db, "url_aliases") == aliases_before
    # the same batch retried within one run records nothing twice
    load.load_batch(fresh_db, "run-2", batch)
    assert len(table_rows(fresh_db, "fetches")) == 4


def test_a_url_listed_twice_in_a_batch_is_recorded_once(fresh_db: Path):
    load.ensure_schema(fresh_db)
    final = load.load_batch(fresh_db, "run-1", [article("https://news.example/a"), article("https://news.example/a")])
    assert [r.state for r in final] == [State.LOADED, State.DUPLICATE]
    assert len(table_rows(fresh_db, "articles")) == 1
    assert [(url, state) for _, url, _, state, *_ in table_rows(fresh_db, "fetches")] == [
        ("https://news.example/a", "loaded")]  # the first row for (run, url) stands


def test_concurrent_loads_in_one_process_keep_keys_unique(fresh_db: Path):
    # The growing tables have no PRIMARY KEY (tasks/load.py SCHEMA): their keys are unique only
    # because this process runs one write transaction at a time.
    load.ensure_schema(fresh_db)
    batch = [article(f"https://news.example/{i}", text=f"Story number {i}.") for i in range(40)]
    with load.held(fresh_db), ThreadPoolExecutor(4) as threads:
        list(threads.map(lambda run: load.load_batch(fresh_db, run, batch), ["run-1"] * 4 + ["run-2"] * 4))
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        counts = con.execute("SELECT (SELECT count(*) FROM articles), (SELECT count(DISTINCT article_id) FROM articles), "
                             "(SELECT count(*) FROM url_aliases), (SELECT count(DISTINCT url) FROM url_aliases), "
                             "(SELECT count(*) FROM fetches), (SELECT count(*) FROM article_signatures)").fetchone()
    assert counts[0] == counts[1] == 40 and counts[2] == counts[3]
    assert counts[4] == 80  # one row per (run, url)
    assert counts[5] == 0  # these texts are too short to sign


def _keyed(schema: str) -> str:
    """The schema as newsflow made it before the growing tables lost their PRIMARY KEY."""
    changes = [("article_id        VARCHAR NOT NULL,", "article_id VARCHAR PRIMARY KEY,"),
               ("url         VARCHAR NOT NULL,            -- unique", "url VARCHAR PRIMARY KEY, --"),
               ("recorded_at TIMESTAMPTZ                  -- (run_id, url) is unique\n",
                "recorded_at TIMESTAMPTZ, PRIMARY KEY (run_id, url)\n"),
               ("article_id   VARCHAR NOT NULL,", "article_id VARCHAR PRIMARY KEY,")]
    for old, new in changes:
        assert schema.count(old) == 1, old
        schema = schema.replace(old, new)
    return schema


def test_a_database_made_with_keys_is_rebuilt_without_them(fresh_db: Path):
    with duckdb.connect(str(fresh_db)) as con:
        con.execute(_keyed(load.SCHEMA))
    first = load.load_batch(fresh_db, "run-1", [article("https://news.example/a", text=WIRE)])
    before = {t: table_rows(fresh_db, t) for t in ("articles", "url_aliases", "fetches", "article_signatures")}
    load.start_run(fresh_db, "run-2", "ingest", {})
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        keyed = con.execute("SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                            "ORDER BY ALL").fetchall()
        leftovers = con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '%keyed'").fetchall()
    assert keyed == [("forgotten",), ("partitions",), ("runs",), ("site_boilerplate",), ("sources",)] and leftovers == []
    assert {t: table_rows(fresh_db, t) for t in before} == before and len(before["article_signatures"]) == 1
    again = load.load_batch(fresh_db, "run-2", [article("https://news.example/a", text=WIRE)])
    assert [r.state for r in first + again] == [State.LOADED, State.DUPLICATE]
    assert len(table_rows(fresh_db, "articles")) == 1


def test_same_text_under_another_url_is_a_duplicate(fresh_db: Path):
    load.ensure_schema(fresh_db)
    load.load_batch(fresh_db, "run-1", [article("https://a.example/story", text="Wire text.")])
    final = load.load_batch(fresh_db, "run-2", [article("https://b.example/copy", text="Wire text.")])
    assert (final[0].state, final[0].reason) == (State.DUPLICATE, "same-content")
    assert len(table_rows(fresh_db, "articles")) == 1


WIRE = ("NORTH HAVEN (Continental Press) - Nine governments signed an agreement on Tuesday to link their "
        "offshore wind farms through a shared grid of undersea cables, a project officials said would cost "
        "about 40 billion euros and take until the middle of the next decade to complete. The deal commits "
        "each country to build its share of converter stations and to open its market to power traded "
        "through the hub, which engineers say will smooth out the swings in output that come with the weather.")


def test_syndicated_copies_on_other_sites_share_a_cluster(fresh_db: Path):
    load.ensure_schema(fresh_db)
    first = article("https://first.example/wire", text=WIRE, domain="first.example")
    first = first.replace(published_at=datetime(2026, 10, 30, 6, tzinfo=UTC))  # before the copies
    load.load_batch(fresh_db, "run-1", [first])
    exact = article("https://second.example/copy", text=WIRE, domain="second.example")
    edited = article("https://third.example/copy", domain="third.example",
                     text=WIRE.replace("on Tuesday", "this week").replace("about 40", "roughly 40")
                     + " Opponents said the cost would fall on consumers.")
    unrelated = article("https://third.example/other", domain="third.example",
                        text="The town council voted on Monday to close the old swimming baths on Mill Lane after "
                             "engineers found cracks in the roof beams, ending eighty years of public bathing in "
                             "the building, and said a new leisure centre would open on the edge of town next spring.")
    final = load.load_batch(fresh_db, "run-2", [exact, edited, unrelated])
    assert [r.state for r in final] == [State.LOADED] * 3
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        clusters = dict(con.execute("SELECT url, cluster_id FROM articles").fetchall())
        view = con.execute("SELECT size, outlets, first_outlet FROM clusters WHERE size > 1").fetchall()
    assert clusters["https://second.example/copy"] == clusters["https://third.example/copy"] == first.article_id
    assert clusters["https://third.example/other"] != first.article_id
    assert view == [(3, 3, "first.example")]


def test_run_counts_and_summary_come_from_fetches(fresh_db: Path):
    load.start_run(fresh_db, "run-1", "ingest", {"sources": ["x"]})
    blocked = Article(url="https://news.example/p", source="feed-b",
                      source_kind=SourceKind.FEED).finish(State.BLOCKED, "http-403")
    load.load_batch(fresh_db, "run-1", [article("https://news.example/a"), blocked])
    load.finish_run(fresh_db, "run-1", discovered=2)
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        status, discovered, loaded, blocked_n = con.execute(
            "SELECT status, discovered, loaded, blocked FROM runs").fetchone()
    assert (status, discovered, loaded, blocked_n) == ("completed", 2, 1, 1)
    summary = {e["source"]: e for e in load.run_summary(fresh_db, "run-1")}
    assert summary["feed-b"]["blocked"] == 1 and summary["feed-b"]["top_reasons"] == ["blocked:http-403 (1)"]
    assert summary["feed-a"]["loaded"] == 1


def test_a_failing_batch_leaves_nothing_behind(fresh_db: Path, monkeypatch: pytest.MonkeyPatch):
    load.ensure_schema(fresh_db)

    def boom(*args, **kwargs):
        raise RuntimeError("crash in the middle of the transaction")

    monkeypatch.setattr(load, "_insert_fetches", boom)
    with pytest.raises(RuntimeError):
        load.load_batch(fresh_db, "run-1", [article("https://news.example/a")])
    assert table_rows(fresh_db, "articles") == [] and table_rows(fresh_db, "url_aliases") == []


def test_locked_database_waits_then_says_so(fresh_db: Path, tmp_path: Path):
    load.ensure_schema(fresh_db)
    with held_by_another_process(fresh_db, seconds=30):
        with pytest.raises(load.DatabaseLockedError, match="locked by another process"):
            with load.connect(fresh_db, wait=0.5):
                pass


def test_a_waiter_that_cannot_leave_its_marker_still_gets_the_clear_error(
        fresh_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    load.ensure_schema(fresh_db)
    monkeypatch.setattr(load, "_waiting_marker", lambda db: tmp_path / "no-such-folder" / "x.waiting")
    with held_by_another_process(fresh_db, seconds=30):
        with pytest.raises(load.DatabaseLockedError, match="locked by another process"):
            with load.connect(fresh_db, read_only=True, wait=0.5):
                pass


def test_a_run_holding_the_database_lets_a_waiting_reader_in(fresh_db: Path):
    """`held` keeps the file open across a run's transactions, yet `newsflow sql` gets its turn."""
    import subprocess
    import sys
    import time

    load.ensure_schema(fresh_db)
    # A run: 12 s of small write transactions, one every 50 ms, all inside one `held` block.
    code = (f"import time; from tasks import load\n"
            f"with load.held({str(fresh_db)!r}):\n"
            f"    end = time.monotonic() + 12; print('holding', flush=True)\n"
            f"    while time.monotonic() < end:\n"
            f"        with load.transaction({str(fresh_db)!r}) as con:\n"
            f"            con.execute(\"INSERT INTO runs (run_id) VALUES (uuid()::VARCHAR)\")\n"
            f"        time.sleep(0.05)\n")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
    try:
        assert run.stdout.readline().strip() == "holding"
        time.sleep(1.0)
        started = time.monotonic()
        with load.connect(fresh_db, read_only=True, wait=8) as con:  # DatabaseLockedError if never let in
            (count,) = con.execute("SELECT count(*) FROM runs").fetchone()
        assert time.monotonic() - started < 8
        assert count > 0  # the run had written (and committed) before letting go
        assert run.poll() is None  # ... and is still running: it let go in the middle of its run
    finally:
        run.wait(timeout=60)
    assert run.returncode == 0


def test_inside_held_reads_and_writes_share_the_open_database(fresh_db: Path):
    load.ensure_schema(fresh_db)
    with load.held(fresh_db):
        with load.transaction(fresh_db) as con:
            con.execute("INSERT INTO runs (run_id) VALUES ('r1')")
        # read-only while this process has the file open read-write: DuckDB alone would refuse
        with load.connect(fresh_db, read_only=True) as con:
            assert con.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]


def test_source_states_round_trip(fresh_db: Path):
    load.ensure_schema(fresh_db)
    load.save_source_states(fresh_db, [{"name": "f", "kind": "feed", "location": "https://x.example/f",
                                        "etag": '"v1"', "body_hash": "h1", "last_checked_at": FETCHED,
                                        "last_status": "changed"}])
    load.save_source_states(fresh_db, [{"name": "f", "kind": "feed", "location": "https://x.example/f",
                                        "last_checked_at": FETCHED, "last_status": "error",
                                        "last_error": "timeout"}])
    assert load.source_states(fresh_db) == {"f": {"etag": '"v1"', "last_modified": None, "body_hash": "h1"}}


def test_free_access_is_stored_and_a_reextraction_that_finds_it_updates_the_row(fresh_db: Path):
    load.ensure_schema(fresh_db)
    locked = article("https://news.example/locked")
    locked = locked.replace(extracted=dataclasses.replace(locked.extracted, free_access=False))
    unknown = article("https://news.example/unknown", text="Another story altogether.")
    load.load_batch(fresh_db, "run-1", [locked, unknown])

    def access() -> dict[str, bool | None]:
        return dict(load.query(fresh_db, "SELECT url, free_access FROM articles")[1])

    assert access() == {"https://news.example/locked": False, "https://news.example/unknown": None}
    # the same text, now with the page's paywall marking read: the row is rewritten
    found = unknown.replace(extracted=dataclasses.replace(unknown.extracted, free_access=True,
                                                          extractor_version="test-2"))
    assert load.update_extractions(fresh_db, "run-2", [found]) == 1
    assert access()["https://news.example/unknown"] is True


def test_reextraction_that_changes_a_text_reclusters(fresh_db: Path):
    load.ensure_schema(fresh_db)
    first = article("https://first.example/wire", text=WIRE, domain="first.example")
    copy = article("https://second.example/copy", text=WIRE + " Officials declined to comment.",
                   domain="second.example")
    load.load_batch(fresh_db, "run-1", [first, copy])

    def clusters() -> dict[str, str]:
        with duckdb.connect(str(fresh_db), read_only=True) as con:
            return dict(con.execute("SELECT article_id, cluster_id FROM articles").fetchall())

    assert len(set(clusters().values())) == 1
    rewritten = copy.replace(extracted=Extracted(
        text="The town council voted on Monday to close the old swimming baths on Mill Lane after engineers "
             "found cracks in the roof beams, ending eighty years of public bathing in the building.",
        extractor_version="test-2"))
    assert load.update_extractions(fresh_db, "run-2", [rewritten]) == 1
    assert load.recluster(fresh_db) >= 1
    assert clusters() == {first.article_id: first.article_id, copy.article_id: copy.article_id}


def test_writers_run_under_the_memory_limit_and_queries_under_duckdbs_default(
        fresh_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "96MB")
    probe = duckdb.connect()
    default = probe.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    probe.execute("SET memory_limit = '96MB'")
    limited = probe.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert default != limited
    with load.transaction(fresh_db) as con:  # a writer: its cache is bounded
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == limited
    # someone's query, alone on the file: DuckDB's own default, for one query's lifetime
    assert load.query(fresh_db, "SELECT current_setting('memory_limit')")[1] == [(default,)]
    with load.held(fresh_db):  # during a run, queries share the run's open database and its limit
        assert load.query(fresh_db, "SELECT current_setting('memory_limit')")[1] == [(limited,)]


@pytest.mark.parametrize("name", ["duckdb_memory_limit", "duckdb_search_memory_limit"])
def test_memory_limits_are_checked_when_settings_are_read(name: str, monkeypatch: pytest.MonkeyPatch):
    from pydantic import ValidationError

    from tasks.settings import Settings

    for good in ("512MB", "1 GB", "1.5GiB"):
        monkeypatch.setenv(f"NEWSFLOW_{name.upper()}", good)
        value = getattr(Settings(), name)
        duckdb.connect(config={"memory_limit": value}).close()  # and DuckDB takes it
    monkeypatch.setenv(f"NEWSFLOW_{name.upper()}", "lots")
    with pytest.raises(ValidationError, match=f"{name}[\\s\\S]*expected a size"):
        Settings()


def test_letting_a_waiter_in_never_closes_a_cursor_another_thread_is_using(fresh_db: Path):
    """Closing a DuckDB connection closes its cursors: the keeper lets go only once they are back."""
    import threading

    load.ensure_schema(fresh_db)
    marker = load._waiting_marker(fresh_db)
    done: list[int] = []

    def another_stage() -> None:  # e.g. the next batch's prepare, reading while this one loads
        with load.connect(fresh_db, read_only=True) as con:
            done.append(con.execute("SELECT count(*) FROM runs").fetchone()[0])

    with load.held(fresh_db):
        with load.transaction(fresh_db) as con:
            marker.write_text("another process")  # `newsflow sql` asks for the file mid-transaction
            reader = threading.Thread(target=another_stage)
            reader.start()
            reader.join(0.5)
            assert reader.is_alive()  # it waits for this transaction's cursor instead of closing it
            con.execute("INSERT INTO runs (run_id) VALUES ('r1')")  # ConnectionException if closed under us
        reader.join(10)
        assert not reader.is_alive() and done == [1]
    marker.unlink()


def test_a_held_database_is_reopened_after_so_many_writes(fresh_db: Path, monkeypatch: pytest.MonkeyPatch):
    """DuckDB gives back what its allocator kept only when the database closes: a run's held
    database is reopened every RECYCLE_WRITES write transactions, and no write is lost."""
    load.ensure_schema(fresh_db)
    opened: list[bool] = []
    real_open = load._open
    monkeypatch.setattr(load, "_open", lambda *a: opened.append(True) or real_open(*a))
    monkeypatch.setattr(load, "RECYCLE_WRITES", 3)
    with load.held(fresh_db):
        with load.connect(fresh_db) as reader:  # a cursor this thread holds across the writes
            for i in range(7):
                with load.transaction(fresh_db) as con:
                    con.execute("INSERT INTO runs (run_id) VALUES (?)", [f"r{i}"])
            assert reader.execute("SELECT count(*) FROM runs").fetchone() == (7,)  # not closed under it
        assert len(opened) == 1  # this thread's own cursor kept the connection open
        for i in range(7, 10):
            with load.transaction(fresh_db) as con:
                con.execute("INSERT INTO runs (run_id) VALUES (?)", [f"r{i}"])
        assert len(opened) == 2  # reopened once its cursor was back
        for i in range(10, 13):
            with load.transaction(fresh_db) as con:
                con.execute("INSERT INTO runs (run_id) VALUES (?)", [f"r{i}"])
        assert len(opened) == 3  # and again 3 writes later
    assert len(table_rows(fresh_db, "runs")) == 13


def test_a_run_goes_on_after_duckdb_invalidates_its_held_database(fresh_db: Path):
    """A fatal DuckDB error (here a checkpoint out of memory) invalidates the open database for
    every later statement; the held database is closed and opened again at the next request, so
    a retried task works, and what was committed before is all there."""
    load.ensure_schema(fresh_db)
    with load.held(fresh_db):
        with load.transaction(fresh_db) as con:  # enough data for the checkpoint to need memory
            con.execute("INSERT INTO runs (run_id, flow) SELECT 'r' || i, repeat(md5(i::VARCHAR), 20) "
                        "FROM range(20000) t(i)")
        with pytest.raises(duckdb.FatalException):
            with load.connect(fresh_db) as con:
                for limit in ("1MB", "2MB", "4MB", "8MB", "16MB"):  # the lowest DuckDB accepts here
                    with suppress(duckdb.OutOfMemoryException):
                        con.execute("SET memory_limit = ?", [limit])
                        break
                con.execute("CHECKPOINT")
        with load.transaction(fresh_db) as con:
            con.execute("INSERT INTO runs (run_id) VALUES ('after')")
        assert load.query(fresh_db, "SELECT count(*) FROM runs")[1] == [(20001,)]
    assert len(table_rows(fresh_db, "runs")) == 20001


def _long_texts(n: int) -> list[Article]:
    """`n` articles of 20 KB each, one word (not signed, to keep the tests quick): what fills a
    writer's memory while its transaction holds them."""
    return [article(f"https://news.example/{i}", text=f"Story{i} " + "x" * 20_000).replace(content_hash=f"h{i}")
            for i in range(n)]


def test_a_writers_memory_limit_grows_with_the_batch_it_must_hold(
        fresh_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import Settings

    monkeypatch.setenv("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "16MB")
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "100")
    assert load.writer_memory_limit(Settings()) == "16000000B"  # the setting, for batches it holds
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "2000")
    assert load.writer_memory_limit(Settings()) == f"{2000 * load.BATCH_RECORD_BYTES}B"
    # A transaction's new rows stay in memory until it commits: under 16MB these 2,000 long texts
    # ran out ("failed to pin block"); under the limit that grows with the batch, they load.
    batch = _long_texts(2000)
    with load.held(fresh_db):
        load.ensure_schema(fresh_db)
        final = load.load_batch(fresh_db, "run-1", batch)
    assert {r.state for r in final} == {State.LOADED}
    assert len(table_rows(fresh_db, "articles")) == 2000


def test_a_load_larger_than_a_batch_gets_the_memory_its_rows_need_then_the_usual_limit(
        fresh_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "16MB")
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "100")
    # The held database opens with the limit for batches of 100 (16MB). One load of 2,000 long
    # texts (a bulk load, larger than a batch) ran out of memory under it.
    batch = _long_texts(2000)

    def limit() -> str:
        with load.connect(fresh_db) as con:
            return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    with load.held(fresh_db):
        load.ensure_schema(fresh_db)
        usual = limit()
        final = load.load_batch(fresh_db, "run-1", batch)
        after = limit()
    assert {r.state for r in final} == {State.LOADED}
    assert len(table_rows(fresh_db, "articles")) == 2000
    assert after == usual  # the held database's later batches run under the usual limit again
