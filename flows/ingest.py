"""The `ingest` flow: discover -> fetch -> extract -> normalise -> dedupe + load, two task runs per batch."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.report import publish_summary
from tasks.extract import shutdown_pool
from tasks.load import finish_run_task, held, refresh_search_task, save_source_states_task, start_run_task
from tasks.pipeline import load_batch_task, pipelined, prepare_batch_task
from tasks.records import batches
from tasks.settings import Settings
from tasks.sources import discover_task, source_specs


@flow(name="ingest", description="Discover, fetch, extract, deduplicate and load news articles into DuckDB.")
def ingest(
    feeds: list[str] | None = None,
    sitemaps: list[str] | None = None,
    urls: list[str] | None = None,
    urls_file: str | None = None,
    warcs: list[str] | None = None,
    db: str | None = None,
    sources_file: str | None = None,
    retry_failed: bool = False,
) -> list[dict]:
    """Ingest the given sources (or, with none given, the configured default sources) once.

    Args:
        feeds: RSS/Atom/JSON feed URLs or files.
        sitemaps: sitemap or sitemap index URLs or files (news sitemaps included).
        urls: article URLs.
        urls_file: a text file of article URLs, one per line.
        warcs: WARC file paths or http(s) URLs (e.g. CC-NEWS).
        db: the DuckDB file (default: NEWSFLOW_DB, else data/news.duckdb).
        sources_file: the TOML file of default sources, read when no source is given
            (default: NEWSFLOW_SOURCES_FILE, else data/sources.toml).
        retry_failed: also re-drive the URLs whose last state was a transient failure (timeouts,
            429/5xx...); with no source given, only those.
    """
    settings = Settings()
    if sources_file:
        settings = settings.model_copy(update={"sources_file": Path(sources_file)})
    db_path = Path(db) if db else settings.db
    run_id = flow_run.id or f"local-{uuid.uuid4()}"
    specs = source_specs(feeds, sitemaps, urls, urls_file, warcs, settings, use_defaults=not retry_failed)
    with held(db_path):  # open once for the run, let go while another process waits (tasks/load.py)
        start_run_task(db_path, run_id, "ingest", {"sources": [s.location for s in specs], "db": str(db_path)})
        discovery = discover_task(specs, settings, db_path, retry_failed)
        discovered = 0  # the state counts are read back from `fetches` by finish_run and publish_summary
        # candidates() streams (a WARC is read batch by batch); quote(): Prefect would otherwise
        # walk every record of a batch looking for futures
        for batch, _ in pipelined(batches(discovery.candidates(), settings.batch_size),
                                  lambda batch: prepare_batch_task.submit(db_path, quote(batch), settings),
                                  lambda batch, prepared: load_batch_task.submit(db_path, run_id, quote(prepared))):
            discovered += len(batch)
        shutdown_pool()  # the extraction workers' memory back before the run's closing steps (index build)
        save_source_states_task(db_path, discovery.states)
        finish_run_task(db_path, run_id, discovered)
        refresh_search_task(db_path)
        return publish_summary(db_path, run_id, discovery.states, get_run_logger())
