"""The `ingest` flow: discover -> fetch -> extract -> normalise -> dedupe + load, one task run per batch."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.report import publish_summary
from tasks.dedupe import skip_known_task
from tasks.extract import extract_task
from tasks.fetch import fetch_task
from tasks.load import (finish_run_task, known_urls_task, load_task, save_source_states_task,
                        start_run_task)
from tasks.normalise import normalise_task
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
) -> list[dict]:
    """Ingest the given sources (or, with none given, the configured default sources) once."""
    settings = Settings()
    db_path = Path(db) if db else settings.db
    run_id = flow_run.id or f"local-{uuid.uuid4()}"
    specs = source_specs(feeds, sitemaps, urls, urls_file, warcs, settings)
    start_run_task(db_path, run_id, "ingest", {"sources": [s.location for s in specs], "db": str(db_path)})
    candidates, source_states = discover_task(specs, settings, db_path)
    for batch in batches(candidates, settings.batch_size):
        known = known_urls_task(db_path, batch)
        records = skip_known_task(batch, known)
        records = fetch_task(records, settings)
        records = extract_task(records, settings)
        records = normalise_task(records)
        load_task(db_path, run_id, records)
    save_source_states_task(db_path, source_states)
    finish_run_task(db_path, run_id, len(candidates))
    return publish_summary(db_path, run_id, source_states, get_run_logger())
