"""The `backfill` flow: WARC archives, sitemap date ranges or re-extraction, partitioned and resumable."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from tasks.backfill import (BatchStages, Request, Window, backfill_prepare_task, clean_domains, plan_task,
                            reextract_load_task, reextract_prepare_task, run_partitions)
from tasks.load import (finish_run_task, held, learn_boilerplate_task, recluster_task, refresh_search_task,
                        start_run_task)
from tasks.extract import shutdown_pool
from tasks.pipeline import load_batch_task
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
    with held(db_path):  # open once for the run, let go while another process waits (tasks/load.py)
        start_run_task(db_path, run_id, "reextract" if reextract else "backfill", {**_parameters(request), "db": str(db_path)})
        partitions = plan_task(request, settings, db_path)
        if reextract:
            learn_boilerplate_task(db_path)  # what every site repeats, from all that is stored (see finish_run)
        stages = _stages(db_path, run_id, settings, request)
        results = run_partitions(partitions, settings, db_path, run_id, request.domains, stages, get_run_logger())
        shutdown_pool()  # the extraction workers' memory back before the run's closing steps (index build)
        finish_run_task(db_path, run_id, sum(r.counts["records"] - r.counts["filtered"] for r in results),
                        "failed" if any(r.status == "failed" for r in results) else "completed")
        if reextract:
            recluster_task(db_path)  # changed texts may join, leave or stop bridging clusters
        refresh_search_task(db_path)
    return {"run_id": run_id, "partitions": len(partitions), "skipped_finished": len(partitions) - len(results),
            "results": [r.summary() for r in results]}


def _stages(db: Path, run_id: str, settings: Settings, request: Request) -> BatchStages:
    """Each batch as two task runs, submitted (tasks/pipeline.py overlaps them)."""
    # quote(): Prefect would otherwise walk every record of a batch looking for futures
    if request.reextract:
        return BatchStages(lambda batch: reextract_prepare_task.submit(db, quote(batch), settings),
                           lambda prepared, row: reextract_load_task.submit(db, run_id, quote(prepared), row))
    return BatchStages(lambda batch: backfill_prepare_task.submit(db, quote(batch), settings, request.window),
                       lambda prepared, row: load_batch_task.submit(db, run_id, quote(prepared), row))


def _parameters(request: Request) -> dict[str, Any]:
    return {"warcs": list(request.warcs), "sitemaps": list(request.sitemaps), "reextract": request.reextract,
            "since": str(request.window.since or ""), "until": str(request.window.until or ""),
            "domains": list(request.domains)}
