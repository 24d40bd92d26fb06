"""`newsflow ingest` and `newsflow sql` as a user runs them: a real subprocess, a loopback feed."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED, held_by_another_process, rss
from tests.servers import serve

SEED_TEXT = SHARED / "seed" / "000_5f3fd007952f4428.txt"
FURNITURE = ["Sign up for", "newsletter", "What you need to know", "Privacy Policy", "Comments", "share",
             "Related", "Terms of Use", "All rights reserved"]


def newsflow(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def seed_paragraphs() -> list[str]:
    lines = [line.strip() for line in SEED_TEXT.read_text().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Russian President Vladimir Putin made"))
    end = next(i for i, line in enumerate(lines) if line.startswith("The Associated Press contributed"))
    return lines[start:end + 1]


@pytest.fixture(scope="module")
def seed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed article page served from a loopback feed, ingested by the real CLI."""
    page = (REPO / "tests" / "fixtures" / "seed_article.html").read_bytes()
    tmp = tmp_path_factory.mktemp("seed")
    db = tmp / "news.duckdb"
    routes: dict = {"/world/putin-belarus": (200, {"Content-Type": "text/html; charset=utf-8"}, page)}
    with serve(routes) as site:
        routes["/feed.xml"] = (200, {"Content-Type": "application/rss+xml"},
                               rss([(site.url("/world/putin-belarus"), "Putin visits Belarus")]))
        result = newsflow("ingest", "--feed", site.url("/feed.xml"), "--db", str(db),
                          env={"NEWSFLOW_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "NEWSFLOW_RAW_DIR": str(tmp / "raw"),
                               "NEWSFLOW_HOST_DELAY": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    return db


@pytest.mark.skipif(not SEED_TEXT.exists(), reason="the shared seed article is absent")
def test_seed_article_from_a_loopback_feed(seed_db: Path):
    result = newsflow("sql", "SELECT title, published_at::DATE::VARCHAR AS day, authors, site_name, text "
                      "FROM articles", "--db", str(seed_db), "--format", "json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["title"] == "Russian President Putin Visits Ally Belarus"
    assert row["day"] == "2022-12-19"
    assert row["authors"] == ["Web Staff"]
    assert row["site_name"]
    for paragraph in seed_paragraphs():
        assert paragraph in row["text"]
    for furniture in FURNITURE:
        assert furniture not in row["text"], furniture


def test_sql_formats(seed_db: Path):
    query = "SELECT state, count(*) AS n FROM fetches GROUP BY state"
    as_csv = newsflow("sql", query, "--db", str(seed_db), "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["state", "n"], ["loaded", "1"]]
    as_json = newsflow("sql", query, "--db", str(seed_db), "--format", "json")
    assert json.loads(as_json.stdout) == [{"state": "loaded", "n": 1}]
    as_table = newsflow("sql", query, "--db", str(seed_db))
    assert "state" in as_table.stdout and "loaded" in as_table.stdout
    bad = newsflow("sql", "SELECT * FROM no_such_table", "--db", str(seed_db))
    assert bad.returncode != 0 and "no_such_table" in bad.stderr


def test_unreadable_source_file_is_a_clear_error(tmp_path: Path):
    result = newsflow("ingest", "--urls-file", str(tmp_path / "missing.txt"), "--db", str(tmp_path / "x.duckdb"))
    assert result.returncode != 0
    assert "missing.txt" in result.stderr and "Traceback" not in result.stderr


def test_locked_database_is_a_clear_error(tmp_path: Path):
    db = tmp_path / "locked.duckdb"
    with held_by_another_process(db):
        result = newsflow("ingest", "--url", "http://127.0.0.1:9/x", "--db", str(db),
                          env={"NEWSFLOW_LOCK_WAIT": "1"})
    assert result.returncode != 0
    assert "locked by another process" in result.stderr and "Traceback" not in result.stderr


def test_revisit_reports_a_changed_story(tmp_path: Path):
    """`newsflow revisit` as a user runs it: the seed page ingested, an hour and a half later
    its headline changed; the summary says so and `article_changes` shows both headlines."""
    page = (REPO / "tests" / "fixtures" / "seed_article.html").read_text(encoding="utf-8")
    db = tmp_path / "news.duckdb"
    env = {"NEWSFLOW_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "NEWSFLOW_RAW_DIR": str(tmp_path / "raw"),
           "NEWSFLOW_HOST_DELAY": "0", "COLUMNS": "120"}
    routes: dict = {"/world/putin-belarus": (200, {"Content-Type": "text/html; charset=utf-8"}, page.encode())}
    with serve(routes) as site:
        assert newsflow("ingest", "--url", site.url("/world/putin-belarus"), "--db", str(db), env=env).returncode == 0
        import duckdb

        with duckdb.connect(str(db)) as con:  # as if it had been fetched 90 minutes ago
            con.execute("UPDATE articles SET fetched_at = fetched_at - INTERVAL 90 MINUTE")
        routes["/world/putin-belarus"] = (200, {"Content-Type": "text/html; charset=utf-8"},
                                          page.replace("Putin Visits Ally Belarus", "Putin Meets Lukashenko").encode())
        result = newsflow("revisit", "--db", str(db), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [header] = [line.strip("┃").split("┃") for line in result.stdout.splitlines() if line.startswith("┃")]
    [values] = [line.strip("│").split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    assert dict(zip([h.strip() for h in header], [v.strip() for v in values], strict=True)) == \
        {"revisited": "1", "changed": "1"}
    # the changed article, under the table: its URL, both headlines
    url_line, headline_line = result.stdout.splitlines()[-3:-1]
    assert url_line == site.url("/world/putin-belarus")
    assert re.fullmatch(r"  Russian President Putin Visits Ally Belarus -> Russian President Putin Meets Lukashenko "
                        r"\((\d+) -> \1 words\)", headline_line), headline_line  # the story kept its length
    changes = newsflow("sql", "SELECT title_before, title_after, article_id FROM article_changes", "--db", str(db),
                       "--format", "csv")
    before, after, article_id = changes.stdout.splitlines()[1].split(",")
    assert (before, after) == ("Russian President Putin Visits Ally Belarus", "Russian President Putin Meets Lukashenko")
    # both raw pages are kept: the first as fetched, the newest by default
    first, newest = (newsflow("raw", article_id, "--db", str(db), *v).stdout for v in (["--version", "1"], []))
    assert "<h1 class=\"entry-title\">Russian President Putin Visits Ally Belarus</h1>" in first
    assert "<h1 class=\"entry-title\">Russian President Putin Meets Lukashenko</h1>" in newest
    missing = newsflow("raw", article_id, "--db", str(db), "--version", "3")
    assert missing.returncode == 2 and f"no article {article_id} in version 3" in missing.stderr
