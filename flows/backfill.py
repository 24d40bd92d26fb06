"""The `backfill` flow: WARC archives, sitemap date ranges or re-extraction, partitioned and resumable."""

from __future__ import annotations

import uuid
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from tasks.backfill import Request, Window, backfill_batch_task, clean_domains, plan_task, reextract_batch_task, run_partitions
from tasks.load import finish_run_task, recluster_task, refresh_search_task, start_run_task
from tasks.settings import Settings


@flow(name="backfill", description="Backfill WARC archives or sitemap date ranges, or re-extract the archive; "
                                   "resumable per partition (WARC file, sitemap day, raw file).")
def backfill(
    warcs: list[str] | None = None,
    sitemaps: list[str] | None = None,
    reextract: bool = False,
    since: date | None = None,
    until: date | None = None,
    domains: list[str] | None = None,
    db: str | None = None,
) -> dict[str, Any]:
    """Run every partition of the request that an earlier run did not finish."""
    request = Request(tuple(warcs or ()), tuple(sitemaps or ()), reextract, Window(since, until),
                      clean_domains(domains)).check()
    settings = Settings()
    db_path = Path(db) if db else settings.db
    run_id = flow_run.id or f"local-{uuid.uuid4()}"
    start_run_task(db_path, run_id, "reextract" if reextract else "backfill", {**_parameters(request), "db": str(db_path)})
    partitions = plan_task(request, settings, db_path)
    batch_task = reextract_batch_task if reextract else backfill_batch_task
    run_batch = partial(_run_batch, batch_task, db_path, run_id, settings, request.window)
    results = run_partitions(partitions, settings, db_path, run_id, request.domains, run_batch, get_run_logger())
    finish_run_task(db_path, run_id, sum(r.counts["records"] - r.counts["filtered"] for r in results),
                    "failed" if any(r.status == "failed" for r in results) else "completed")
    if reextract:
        recluster_task(db_path)  # changed texts may join, leave or stop bridging clusters
    refresh_search_task(db_path)
    return {"run_id": run_id, "partitions": len(partitions), "skipped_finished": len(partitions) - len(results),
            "results": [r.summary() for r in results]}


def _run_batch(batch_task: Any, db: Path, run_id: str, settings: Settings, window: Window,
               records: list, partition: dict | None) -> dict[str, int]:
    """One task run for one batch."""
    # quote(): Prefect would otherwise walk every record of the batch looking for futures
    return batch_task(db, run_id, quote(records), settings, window, partition)


def _parameters(request: Request) -> dict[str, Any]:
    return {"warcs": list(request.warcs), "sitemaps": list(request.sitemaps), "reextract": request.reextract,
            "since": str(request.window.since or ""), "until": str(request.window.until or ""),
            "domains": list(request.domains)}
