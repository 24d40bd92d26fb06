"""`newsflow revisit`, registered on the `newsflow` typer app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli import DbOption, _check_db_writable, _existing_db, app


@app.command()
def revisit(
    db: DbOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="articles to revisit at most "
                                              "[env NEWSFLOW_REVISIT_LIMIT; default 5000]")] = None,
) -> None:
    """Fetch stored articles again at set ages (NEWSFLOW_REVISIT_AFTER_HOURS, default 1,6,24,168)
    and keep each changed version: headline changes, corrections, edits."""
    db_path = _existing_db(db)
    _check_db_writable(db_path)
    from flows.startup import head_start
    from tasks.settings import Settings

    with head_start(Settings().extract_workers, "flows.revisit"):
        from flows.revisit import revisit as revisit_flow

        summary = revisit_flow(db=str(db_path), limit=limit)
    _print_summary(summary, db_path)


def _print_summary(summary: dict[str, Any], db: Path) -> None:
    from tasks.load import REVISIT_OUTCOMES

    table = Table(title=f"newsflow revisit -> {db}")
    columns = ["revisited", *[o for o in REVISIT_OUTCOMES if summary.get(o)]]
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(*(str(summary.get(c, 0)) for c in columns))
    console = Console()
    console.print(table)
    if not summary.get("changed"):
        return
    from tasks.load import revisit_changes

    changes = revisit_changes(db, summary["run_id"])
    for change in changes[:SHOWN_CHANGES]:
        headline = (f"{change['title_before']} -> {change['title_after']}"
                    if change["title_before"] != change["title_after"] else change["title_after"])
        console.print(f"{change['url']}\n  {headline} ({change['words_before']} -> {change['words_after']} words)"
                      + (f"\n  {change['correction']}" if change["correction"] else ""),
                      highlight=False, markup=False, soft_wrap=True)
    more = f"{len(changes) - SHOWN_CHANGES} more; " if len(changes) > SHOWN_CHANGES else ""
    console.print(f"{more}every change: newsflow sql \"SELECT * FROM article_changes ORDER BY seen_at DESC\"",
                  highlight=False, markup=False)


SHOWN_CHANGES = 10  # changed articles the summary lists; `article_changes` has them all
