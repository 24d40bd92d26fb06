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
    Console().print(table)
    if summary.get("changed"):
        Console().print("what changed: newsflow sql \"SELECT * FROM article_changes ORDER BY seen_at DESC\"",
                        highlight=False, markup=False)
