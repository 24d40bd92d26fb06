"""The `newsflow` commands for operators: stats, search, export, serve, and queries during a run."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import SAMPLE_ARTICLES
from tests.test_views import SEED_URL

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_search_lists_the_seed_first(sample_db: Path) -> None:
    code, out = run("search", "Lukashenko", "--db", str(sample_db), "--format", "csv")
    assert code == 0, out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["url"] == SEED_URL


def test_search_options(sample_db: Path) -> None:
    code, out = run("search", "harbour", "--db", str(sample_db), "--since", "2026-11-15",
                    "--source", "www.harbourgazette.example", "--limit", "2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and 1 <= len(rows) <= 2
    assert all(r["published"] >= "2026-11-15" and "harbourgazette" in r["url"] for r in rows)
    code, out = run("search", "zzzyzzyva", "--db", str(sample_db))
    assert code == 1 and "no article matches" in out


def test_stats_prints_both_views(sample_db: Path) -> None:
    code, out = run("stats", "--db", str(sample_db))
    assert code == 0, out
    assert "source_health" in out and "daily_articles" in out and "sample" in out
    assert "2022-12-19" in out  # the seed's day
    code, out = run("stats", "--db", str(sample_db), "--since", "2099-01-01")
    assert code == 0 and "2022-12-19" not in out
    assert run("stats", "--db", str(sample_db), "--since", "yesterday")[0] == 2


def test_a_table_wider_than_the_terminal_is_shown_a_row_at_a_time(sample_db: Path) -> None:
    """source_health has 13 columns: on an 80-column terminal they used to be squeezed to "so…";
    now each row is a block of (column, value) lines, and a table that fits stays a table."""
    result = runner.invoke(app, ["stats", "--db", str(sample_db)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    health, daily = result.output.split("daily_articles")
    lines = health.splitlines()
    for column in ("source", "last_success", "success_rate", "empty_text_rate", "paywalled_rate", "last_status"):
        assert any(line.startswith(f"{column} ") for line in lines), column
    assert "…" not in health and "source_health 1 of 1" in health
    assert all(len(line) <= 80 for line in result.output.splitlines())
    assert "┃ day " in daily  # five columns fit: still a table
    wide = runner.invoke(app, ["stats", "--db", str(sample_db)], env={"COLUMNS": "300"}).output
    assert "┃ source ┃ urls ┃" in wide and " of 1" not in wide


def test_a_value_longer_than_the_terminal_is_written_whole_on_its_line(sample_db: Path) -> None:
    """The seed's URL is longer than an 80-column terminal: folded into a table cell it came out
    of a copy with a line break and padding inside; in the row-at-a-time display it is one line."""
    result = runner.invoke(app, ["search", "Lukashenko", "--db", str(sample_db)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert len(SEED_URL) > 80
    assert f"url        {SEED_URL}" in result.output.splitlines()


def test_the_run_summary_shows_a_long_source_name_whole(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed URL as a source's name used to be cut to "https://www.harbo…" on 80 columns."""
    from flows.cli import _print_summary
    from flows.report import COLUMNS

    monkeypatch.setenv("COLUMNS", "80")
    source = "https://www.harbourgazette.example/feeds/news/world-and-business.xml"
    _print_summary([{**dict.fromkeys(COLUMNS, 1234), "source": source, "top_reasons": []}], Path("n.duckdb"))
    assert _first_cell_lines(capsys.readouterr().out) == source


def test_the_backfill_summary_shows_a_long_partition_whole(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A WARC partition's key was cut to "warc:/work/mai…" on 80 columns."""
    from flows.cli_backfill import _print_summary

    monkeypatch.setenv("COLUMNS", "80")
    partition = "warc:/srv/archive/cc-news/2024/01/CC-NEWS-20240101000000-00000.warc.gz"
    _print_summary({"partitions": 1, "skipped_finished": 0, "results": [
        {"partition": partition, "status": "done", "records": 38, "loaded": 35, "not_article": 3,
         "pages_per_s": 41.1, "reason": None}]}, Path("n.duckdb"))
    assert _first_cell_lines(capsys.readouterr().out) == partition


def _first_cell_lines(out: str) -> str:
    """The text of a rich table's first column, its folded lines joined; checks nothing was cut."""
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())
    return "".join(line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│"))


def test_export_parquet(sample_db: Path, tmp_path: Path) -> None:
    code, out = run("export", "--format", "parquet", "--db", str(sample_db), str(tmp_path / "out"))
    assert code == 0 and f"{SAMPLE_ARTICLES} articles" in out
    assert len(list((tmp_path / "out").glob("date=*/*.parquet"))) >= 10


def test_sql_still_works(sample_db: Path) -> None:
    code, out = run("sql", "SELECT count(*) AS n FROM articles", "--db", str(sample_db), "--format", "csv")
    assert (code, out.split()) == (0, ["n", str(SAMPLE_ARTICLES)])


def test_commands_need_a_database(tmp_path: Path) -> None:
    for command in (["stats"], ["search", "x"], ["export", str(tmp_path / "o")], ["revisit"]):
        code, out = run(*command, "--db", str(tmp_path / "missing.duckdb"))
        assert code == 2 and "newsflow ingest" in out


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("NEWSFLOW_CA_BUNDLE", "/nonexistent/ca.pem", "NEWSFLOW_CA_BUNDLE: no such file: /nonexistent/ca.pem"),
    ("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "lots", "NEWSFLOW_DUCKDB_MEMORY_LIMIT: expected a size"),
    ("NEWSFLOW_BATCH_SIZE", "many", "NEWSFLOW_BATCH_SIZE: Input should be a valid integer"),
    ("NEWSFLOW_BATCH_SIZE", "0", "NEWSFLOW_BATCH_SIZE: Input should be greater than or equal to 1"),
])
def test_a_refused_setting_is_named_in_one_line(tmp_path: Path, variable: str, value: str, said: str) -> None:
    result = runner.invoke(app, ["sql", "SELECT 1", "--db", str(tmp_path / "n.duckdb")],
                           env={"COLUMNS": "200", variable: value})
    assert result.exit_code == 2
    assert said in result.output and "Traceback" not in result.output


def test_serve_dry_run_prints_the_schedule() -> None:
    code, out = run("serve", "--dry-run")
    assert code == 0, out
    assert "ingest/hourly" in out and "0 * * * * (UTC)" in out and "reextract" in out


# ---------------------------------------------------------------- queries while a writer holds the file

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


@pytest.fixture
def held_db(sample_db: Path, tmp_path: Path) -> Iterator[tuple[Path, float]]:
    """A copy of the sample database, write-locked by another process for 1.5 s."""
    db = tmp_path / "held.duckdb"
    db.write_bytes(sample_db.read_bytes())
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout and holder.stdout.readline().strip() == "held"
    yield db, time.monotonic()
    holder.wait(timeout=30)


def test_query_waits_for_a_writer(held_db: tuple[Path, float], monkeypatch: pytest.MonkeyPatch) -> None:
    db, since = held_db
    monkeypatch.setenv("NEWSFLOW_LOCK_WAIT", "20")
    code, out = run("search", "Lukashenko", "--db", str(db), "--format", "csv")
    assert code == 0 and SEED_URL in out
    assert time.monotonic() - since > 1.0  # it did wait for the holder to let go


def test_query_says_why_when_the_lock_persists(held_db: tuple[Path, float],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    db, _ = held_db
    monkeypatch.setenv("NEWSFLOW_LOCK_WAIT", "0.2")
    for command in (["stats"], ["sql", "SELECT 1"], ["search", "x"]):
        code, out = run(*command, "--db", str(db))
        assert code == 2 and "locked by another process" in out and "NEWSFLOW_LOCK_WAIT" in out, out


def test_clusters_shows_the_sample_wire_story(sample_db: Path) -> None:
    code, out = run("clusters", "--db", str(sample_db), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    # the sample's one wire story runs on three outlets, with other headlines and edits
    assert [(r["size"], r["outlets"]) for r in rows] == [("3", "3")]
    assert run("clusters", "--db", str(sample_db), "--min-size", "4", "--format", "csv")[1].strip() == \
        "size,outlets,first_outlet,first_published,last_published,title,cluster_id"
