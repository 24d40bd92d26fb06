"""The `newsflow` command: run flows once and query the database."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="newsflow: news ingestion into DuckDB (feeds, sitemaps, URL lists, WARC archives).")
err = Console(stderr=True)

DbOption = Annotated[Path | None, typer.Option("--db", help="DuckDB file [env NEWSFLOW_DB; default data/news.duckdb]")]


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _db_path(db: Path | None) -> Path:
    from tasks.settings import Settings

    return db or Settings().db


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.callback()
def _valid_settings() -> None:
    """Before any command: a NEWSFLOW_* variable the settings refuse is one line naming it, not a
    traceback from deep inside the first command to read the settings."""
    from pydantic import ValidationError

    from tasks.settings import Settings

    try:
        Settings()
    except ValidationError as exc:
        # a default computed from a refused field is refused too: that one says nothing new
        refused = [e for e in exc.errors() if e["type"] != "default_factory_not_called"]
        _fail("; ".join(f"NEWSFLOW_{'_'.join(map(str, e['loc'])).upper()}: "
                        f"{e['msg'].removeprefix('Value error, ')}" for e in refused))


@app.command()
def ingest(
    db: DbOption = None,
    feed: Annotated[list[str] | None, typer.Option("--feed", help="RSS/Atom/JSON feed URL or file (repeatable)")] = None,
    sitemap: Annotated[list[str] | None, typer.Option("--sitemap", help="sitemap or sitemap index URL or file (repeatable)")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="article URL (repeatable)")] = None,
    urls_file: Annotated[Path | None, typer.Option("--urls-file", help="text file of URLs, one per line; or a .csv, .tsv or .parquet table with a url column")] = None,
    warc: Annotated[list[str] | None, typer.Option("--warc", help="WARC file path or http(s) URL (repeatable)")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="re-drive URLs whose last state was a "
                                               "transient failure (alone: only those)")] = False,
) -> None:
    """Run the ingest flow once; with no source options, ingest the configured default sources."""
    from tasks.sources import SourceError

    db_path = _db_path(db)
    _check_inputs(urls_file, warc or [])
    _check_db_writable(db_path)
    from flows.startup import head_start
    from tasks.settings import Settings

    with head_start(Settings().extract_workers, "flows.ingest"):
        from flows.ingest import ingest as ingest_flow

        try:
            summary = ingest_flow(feeds=feed or [], sitemaps=sitemap or [], urls=url or [],
                                  urls_file=str(urls_file) if urls_file else None, warcs=warc or [],
                                  db=str(db_path), retry_failed=retry_failed)
        except SourceError as exc:
            _fail(str(exc))
    _print_summary(summary, db_path)


def _check_inputs(urls_file: Path | None, warcs: list[str]) -> None:
    """Refuse unreadable local inputs before starting a flow run."""
    local = [Path(w) for w in warcs if "://" not in w]
    for path in ([urls_file] if urls_file else []) + local:
        if not path.is_file():
            _fail(f"cannot read {path}: no such file")


def _check_db_writable(db: Path) -> None:
    from tasks.load import DatabaseLockedError, ensure_schema

    try:
        ensure_schema(db)
    except DatabaseLockedError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot open database {db}: {exc}")


def _print_summary(summary: list[dict[str, Any]], db: Path) -> None:
    """Counts per source and state, then each source's top reasons below (a table of nine
    columns and free text does not fit an 80-column terminal)."""
    from flows.report import COLUMNS

    console = Console()
    table = Table(title=f"newsflow ingest -> {db}")
    short = {"discovered": "found", "duplicate": "dup", "not_article": "not art"}
    for column in COLUMNS:
        if column == "source":  # a feed's URL: folded onto more lines rather than cut to "https://ww…"
            table.add_column(column, overflow="fold")
        else:
            table.add_column(short.get(column, column), justify="right", no_wrap=True)
    for entry in summary:
        table.add_row(*(str(entry[c]) for c in COLUMNS))
    console.print(table)
    for entry in summary:
        if entry["top_reasons"]:
            console.print(f"{entry['source']}: " + ", ".join(entry["top_reasons"]), highlight=False)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run (read-only)")],
    db: DbOption = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json")] = OutputFormat.table,
) -> None:
    """Query the database: aligned table for people, csv or json for programs."""
    import duckdb

    from tasks.load import DatabaseLockedError
    from tasks.load import query as run_query

    db_path = _db_path(db)
    if not db_path.exists():
        _fail(f"no database at {db_path}: run `newsflow ingest` first")
    try:
        columns, rows = run_query(db_path, query)
    except DatabaseLockedError as exc:
        _locked(exc)
    except duckdb.Error as exc:
        _fail(f"query failed: {exc}", code=1)
    _print_rows(columns, rows, format)


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt is OutputFormat.json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, ensure_ascii=False))
    else:
        _print_table(columns, rows)


def _print_table(columns: list[str], rows: list[tuple[Any, ...]], title: str | None = None) -> None:
    """Rows as a table; where the table is wider than the terminal, one block per row of
    "column  value" lines, as psql's expanded display does, rather than every column squeezed to
    "so…". Each value is written whole on its line and left to the terminal to wrap: a URL folded
    into a cell came out of a copy with line breaks and padding in it. By hand because rich only
    squeezes, crops or folds a table's columns; it has no such mode."""
    console = Console()
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    table = Table(*columns, title=title)
    for row in cells:
        table.add_row(*row)
    natural = Measurement.get(console, console.options.update_width(sys.maxsize), table).maximum
    if not rows or natural <= console.width:
        console.print(table)
        return
    width = max(map(len, columns))
    indent = "\n" + " " * (width + 2)  # a value's later lines start under its first
    for number, row in enumerate(cells, 1):
        console.print(f"-[ {title or 'row'} {number} of {len(cells)} ]-", style="bold", markup=False, highlight=False)
        for column, value in zip(columns, row, strict=True):
            line = Text(column.ljust(width), style="bold").append("  " + value.replace("\n", indent))
            console.print(line, soft_wrap=True)  # soft_wrap: neither folded nor cropped
        console.print()


SinceOption = Annotated[datetime | None, typer.Option(
    "--since", formats=["%Y-%m-%d"], help="only from this day on (YYYY-MM-DD, UTC)")]


def _locked(exc: Exception) -> None:
    _fail(f"{exc}\nA newsflow run is probably writing to it: try again in a moment, "
          "or wait longer with NEWSFLOW_LOCK_WAIT=SECONDS.")


def _existing_db(db: Path | None) -> Path:
    db_path = _db_path(db)
    if not db_path.exists():
        _fail(f"no database at {db_path}: run `newsflow ingest` first")
    return db_path


def _day(since: datetime | None) -> str | None:
    return since.date().isoformat() if since else None


@app.command()
def stats(db: DbOption = None, since: SinceOption = None) -> None:
    """Per-source health (`source_health`) and articles per day (`daily_articles`)."""
    from tasks.load import DatabaseLockedError
    from tasks.load import stats as read_stats

    db_path = _existing_db(db)
    try:
        views = read_stats(db_path, _day(since))
    except DatabaseLockedError as exc:
        _locked(exc)
    for name, (columns, rows) in views.items():
        _print_table(columns, rows, title=f"{name}" + (f" since {_day(since)}" if since else ""))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="words to look for in titles and texts (BM25 ranking)")],
    db: DbOption = None,
    since: SinceOption = None,
    source: Annotated[str | None, typer.Option("--source", help="only this source name or domain")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many articles")] = 10,
    format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json")] = OutputFormat.table,
) -> None:
    """Full-text search over the articles, best match first."""
    from tasks.load import DatabaseLockedError, has_search_index, refresh_search
    from tasks.load import search as run_search
    from tasks.views import SearchUnavailableError

    db_path = _existing_db(db)
    try:
        if not has_search_index(db_path):  # a database loaded before search existed
            refresh_search(db_path)
        columns, rows = run_search(db_path, query, _day(since), source, limit)
    except DatabaseLockedError as exc:
        _locked(exc)
    except SearchUnavailableError as exc:
        _fail(str(exc))
    if not rows and format is OutputFormat.table:
        err.print(f"no article matches {query!r}", highlight=False)
        raise typer.Exit(1)
    _print_rows(columns, rows, format)


class ExportFormat(StrEnum):
    parquet = "parquet"


@app.command()
def export(
    out_dir: Annotated[Path, typer.Argument(help="directory for the files (date=YYYY-MM-DD/ partitions)")],
    db: DbOption = None,
    since: SinceOption = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="parquet")] = ExportFormat.parquet,
) -> None:
    """Write the articles as Parquet files partitioned by publication day (fetch day when undated)."""
    import duckdb

    from tasks.load import DatabaseLockedError, export_parquet

    db_path = _existing_db(db)
    try:
        count = export_parquet(db_path, out_dir, _day(since))
    except DatabaseLockedError as exc:
        _locked(exc)
    except duckdb.Error as exc:
        _fail(f"export failed: {exc}", code=1)
    Console().print(f"{count} articles -> {out_dir}/date=*/ ({format})", highlight=False)


@app.command()
def serve(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the schedule and exit")] = False,
) -> None:
    """Serve prefect.yaml's deployments, with their schedules, from this process (no work pool)."""
    from flows.serve import serve as serve_deployments

    serve_deployments(dry_run=dry_run)


@app.command()
def clusters(
    db: DbOption = None,
    since: SinceOption = None,
    min_size: Annotated[int, typer.Option("--min-size", min=1, help="only clusters of at least N articles")] = 2,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many clusters")] = 20,
    format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json")] = OutputFormat.table,
) -> None:
    """Stories carried by several outlets: size, outlets, who ran it first, first and last published."""
    from tasks.load import DatabaseLockedError
    from tasks.load import clusters as read_clusters

    db_path = _existing_db(db)
    try:
        columns, rows = read_clusters(db_path, since, min_size, limit)
    except DatabaseLockedError as exc:
        _locked(exc)
    _print_rows(columns, rows, format)


import flows.cli_backfill  # noqa: E402,F401  (registers the backfill, raw and forget commands on `app`)
import flows.cli_revisit  # noqa: E402,F401  (registers the revisit command on `app`)


def main() -> None:
    app()


if __name__ == "__main__":
    # `python -m flows.cli`: this file runs as __main__, while the command modules imported above
    # register theirs on the `app` of `flows.cli` (imported anew by them), so run that one.
    from flows.cli import main as registered_main

    registered_main()
