"""One batch through every stage, as one task run: skip known -> fetch -> extract -> normalise -> load.

The flows hand batches to `process_batch` instead of chaining one task per stage, because every
Prefect task run costs ~0.3 s of client and server time on this 2-core machine (measured by
bench/throughput.py): six per batch of 200 pages cost as much as the extraction of ~80 of them.
The stage functions stay separate and plain; this only composes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.dedupe import skip_known_urls
from tasks.extract import extract_batch
from tasks.fetch import fetch_batch
from tasks.load import known_urls, load_batch
from tasks.normalise import normalise_batch
from tasks.records import Article
from tasks.settings import Settings


def prepare_batch(db: Path, records: list[Article], settings: Settings) -> list[Article]:
    """Every stage before the load: records come back extracted and normalised, or finished."""
    records = skip_known_urls(records, known_urls(db, records))
    records = fetch_batch(records, settings)  # WARC records are referenced in place: nothing to fetch
    return normalise_batch(extract_batch(records, settings, db))


def process_batch(db: Path, run_id: str, records: list[Article], settings: Settings,
                  keep: Callable[[list[Article]], list[Article]] | None = None,
                  partition: dict[str, Any] | None = None) -> dict[str, int]:
    """One batch from candidates to rows; `keep` may finish records before the load (a date window).
    Returns the count of each final state."""
    records = prepare_batch(db, records, settings)
    final = load_batch(db, run_id, keep(records) if keep else records, partition)
    return dict(Counter(str(r.state) for r in final))


# --- Prefect task (thin wrapper) -----------------------------------------------------------------
from prefect import task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402

process_batch_task = task(name="process-batch", cache_policy=NONE, retries=1, retry_delay_seconds=5)(process_batch)
