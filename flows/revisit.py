"""The `revisit` flow: fetch stored articles again at set ages and keep each changed version."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.report import publish_revisit_summary
from tasks.extract import shutdown_pool
from tasks.load import (finish_run_task, held, recluster_task, record_revisits_task, refresh_search_task,
                        revisit_candidates_task, start_run_task)
from tasks.pipeline import pipelined
from tasks.records import batches
from tasks.revisit import prepare_revisit_task
from tasks.settings import Settings


@flow(name="revisit", description="Fetch stored articles again at set ages (NEWSFLOW_REVISIT_AFTER_HOURS) and "
                                  "keep each changed version: headline changes, corrections, edits.")
def revisit(db: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Revisit the articles due now, youngest first.

    Args:
        db: the DuckDB file (default: NEWSFLOW_DB, else data/news.duckdb).
        limit: articles to revisit at most (default: NEWSFLOW_REVISIT_LIMIT, 5,000).
    """
    settings = Settings()
    db_path = Path(db) if db else settings.db
    run_id = flow_run.id or f"local-{uuid.uuid4()}"
    cap = settings.revisit_limit if limit is None else limit
    with held(db_path):  # open once for the run, let go while another process waits (tasks/load.py)
        start_run_task(db_path, run_id, "revisit", {"limit": cap, "after_hours": list(settings.revisit_after_hours),
                                                    "db": str(db_path)})
        due = revisit_candidates_task(db_path, settings.revisit_after_hours, datetime.now(UTC), cap)
        outcomes: Counter[str] = Counter()
        # quote(): Prefect would otherwise walk every record of a batch looking for futures
        for _, counts in pipelined(batches(due, settings.batch_size),
                                   lambda batch: prepare_revisit_task.submit(db_path, quote(batch), settings),
                                   lambda batch, prepared: record_revisits_task.submit(db_path, run_id, quote(prepared))):
            outcomes.update(counts)
        shutdown_pool()
        finish_run_task(db_path, run_id, len(due))
        if outcomes["changed"]:
            recluster_task(db_path)  # a changed text may join, leave or stop bridging clusters
            refresh_search_task(db_path)
        summary = {"run_id": run_id, "revisited": len(due), **{k: outcomes[k] for k in sorted(outcomes)}}
        publish_revisit_summary(db_path, run_id, summary, get_run_logger())
    return summary
