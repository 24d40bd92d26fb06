"""`newsflow backfill`, `newsflow raw ARTICLE_ID` and `newsflow forget`, registered on the `newsflow` typer app."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli import DbOption, _check_db_writable, _db_path, _fail, app


@app.command()
def backfill(
    db: DbOption = None,
    warc: Annotated[list[str] | None, typer.Option("--warc", help="WARC file, glob or http(s) URL (repeatable)")] = None,
    sitemap: Annotated[list[str] | None, typer.Option("--sitemap", help="sitemap URL or file (repeatable; needs --since/--until)")] = None,
    reextract: Annotated[bool, typer.Option("--reextract", help="re-extract archived articles in place")] = False,
    since: Annotated[datetime | None, typer.Option("--since", formats=["%Y-%m-%d"], help="first published day (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option("--until", formats=["%Y-%m-%d"], help="last published day (UTC), included")] = None,
    domain: Annotated[list[str] | None, typer.Option("--domain", help="only this domain and its subdomains (repeatable)")] = None,
) -> None:
    """Backfill WARC files or a sitemap's date range, or re-extract the archive; a rerun resumes."""
    from tasks.backfill import BackfillRequestError, Request, Window, clean_domains

    request = Request(tuple(warc or ()), tuple(sitemap or ()), reextract,
                      Window(since.date() if since else None, until.date() if until else None), clean_domains(domain))
    try:
        request.check()
    except BackfillRequestError as exc:
        _fail(str(exc))
    db_path = _db_path(db)
    if reextract and not db_path.exists():
        _fail(f"no database at {db_path}: nothing to re-extract")
    _check_db_writable(db_path)
    from flows.startup import head_start
    from tasks.settings import Settings

    with head_start(Settings().extract_workers, "flows.backfill"):
        from flows.backfill import backfill as backfill_flow

        summary = backfill_flow(warcs=list(request.warcs), sitemaps=list(request.sitemaps), reextract=reextract,
                                since=request.window.since, until=request.window.until,
                                domains=list(request.domains), db=str(db_path))
    _print_summary(summary, db_path)
    if any(r["status"] == "failed" for r in summary["results"]):
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any], db: Path) -> None:
    results = summary["results"]
    keys = [k for k in ("records", "filtered", "loaded", "duplicate", "not_article", "skipped", "failed",
                        "changed", "unchanged") if any(k in r for r in results)]
    table = Table(title=f"newsflow backfill -> {db} ({summary['skipped_finished']} of "
                        f"{summary['partitions']} partitions already finished)")
    for column in ["partition", "status", *keys, "pages/s", "reason"]:
        if column in ("partition", "reason"):  # a WARC's path, an error: folded, not cut to "warc:/wo…"
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for r in results:
        table.add_row(r["partition"], r["status"], *(str(r.get(k, 0)) for k in keys), str(r["pages_per_s"]),
                      r["reason"] or "")
    Console().print(table)


@app.command()
def raw(
    article_id: Annotated[str, typer.Argument(help="the article's article_id")],
    db: DbOption = None,
    headers: Annotated[bool, typer.Option("--headers", help="print the HTTP status line and headers first")] = False,
    version: Annotated[int | None, typer.Option("--version", min=1, help="an earlier version, as a revisit "
                                                "found it (1: as first fetched); default: the newest")] = None,
) -> None:
    """Print an article's raw page as archived (decoded to text)."""
    from tasks.archive import read_raw
    from tasks.load import DatabaseLockedError, connect
    from tasks.records import RawRef

    db_path = _db_path(db)
    if not db_path.exists():
        _fail(f"no database at {db_path}")
    try:
        with connect(db_path, read_only=True) as con:
            row = con.execute("SELECT raw_path, raw_offset, raw_length FROM articles WHERE article_id = ?",
                              [article_id]).fetchone()
            if row is not None and version is not None:
                row = _version_raw(con, article_id, version)
    except DatabaseLockedError as exc:
        _fail(str(exc))
    if row is None:
        _fail(f"no article {article_id}" + (f" in version {version}" if version else ""))
    if row[0] is None:
        _fail(f"article {article_id} has no archived raw page")
    try:
        response = read_raw(RawRef(*row))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the raw page of {article_id} at {row[0]}:{row[1]}: {exc}", code=1)
    if headers:
        print(f"{response.status} {response.url}")
        print("".join(f"{k}: {v}\n" for k, v in response.headers))
    sys.stdout.write(_page_text(response.body, response.header("content-type")))


def _version_raw(con: Any, article_id: str, version: int) -> tuple[str | None, int, int] | None:
    """Where version `version` of an article has its raw page: `articles` holds the newest,
    `article_versions` the ones revisits replaced (a database no revisit has opened has neither)."""
    if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'article_versions'").fetchall():
        return con.execute("SELECT raw_path, raw_offset, raw_length FROM articles WHERE article_id = ? AND ? = 1",
                           [article_id, version]).fetchone()
    return con.execute(
        "SELECT raw_path, raw_offset, raw_length FROM articles WHERE article_id = $id AND version = $v "
        "UNION ALL SELECT raw_path, raw_offset, raw_length FROM article_versions WHERE article_id = $id AND version = $v",
        {"id": article_id, "v": version}).fetchone()


def _page_text(body: bytes, content_type: str | None) -> str:
    from tasks.extract import decode_html  # the charset rules extraction uses

    return decode_html(body, content_type)


@app.command(name="forget")
def forget_command(
    db: DbOption = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="an article URL to forget (repeatable)")] = None,
    domain: Annotated[list[str] | None, typer.Option("--domain", help="a domain to forget, subdomains included (repeatable)")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="why, kept in the `forgotten` table")] = None,
) -> None:
    """Remove URLs or domains from the database, the raw archive and the search index, and never fetch them again."""
    from flows.forget import forget
    from tasks.load import DatabaseLockedError

    db_path = _db_path(db)
    if not db_path.exists():
        _fail(f"no database at {db_path}")
    if not (url or domain):
        _fail("nothing to forget: give --url and/or --domain")
    try:
        report = forget(db_path, url or [], domain or [], reason)
    except DatabaseLockedError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    removed = report.removed
    Console().print(f"forgotten: {report.new_rules} new rule(s); removed {removed['articles']} articles, "
                    f"{removed['fetches']} fetch-log rows, {removed['url_aliases']} URL aliases; "
                    f"erased {len(report.erased.records)} raw pages", highlight=False)
    for path in report.foreign_raw:
        Console(stderr=True).print(f"left as it is (not written by newsflow): {path}", highlight=False)
    for path in report.erased.unreadable:
        Console(stderr=True).print(f"[yellow]could not read to the end, check it:[/] {path}", highlight=False)
