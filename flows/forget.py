"""`newsflow forget`: take URLs or whole domains out of the archive, for good (takedowns, opt-outs).

Wires three stages, each safe to repeat, so a run cut short is finished by running it again:

    tasks.load.add_forgotten      record the rules; what they cover      (one transaction)
    tasks.archive.erase_pages     overwrite their raw pages in newsflow's own WARC files
    tasks.load.delete_forgotten   delete their rows, rebuild the clusters (one transaction)

then rebuilds the search index, which still holds the removed texts' words. The raw pages go
before the rows because the rows say which URLs to look for. Later runs skip the rules' URLs
before fetching (tasks/dedupe.py). Not a Prefect flow: like `sql` or `export`, it is an
operator's one-off command on the database, with its audit trail in the `forgotten` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tasks.archive import Erased, erase_pages
from tasks.load import add_forgotten, delete_forgotten, refresh_search_if_available
from tasks.normalise import canonical_url
from tasks.settings import Settings


@dataclass(frozen=True, slots=True)
class ForgetReport:
    new_rules: int
    removed: dict[str, int]  # rows deleted, by table
    erased: Erased  # raw pages overwritten in newsflow's WARC files
    foreign_raw: list[str]  # WARC files newsflow did not write (a backfill's inputs): left as they are


def forget(db: Path, urls: list[str], domains: list[str], reason: str | None = None,
           settings: Settings | None = None) -> ForgetReport:
    """Forget these URLs and domains (subdomains included): rows, raw pages, search index."""
    settings = settings or Settings()
    plan = add_forgotten(db, urls, domains, reason)
    note = f"A page was removed here by newsflow forget on {datetime.now(UTC):%Y-%m-%d}."
    erased = erase_pages(settings.raw_dir, lambda uri: canonical_url(uri) in plan.urls or plan.rules.covers(uri), note)
    removed = delete_forgotten(db)
    refresh_search_if_available(db)
    raw_root = settings.raw_dir.resolve()
    foreign = sorted(p for p in plan.raw_paths if not Path(p).resolve().is_relative_to(raw_root))
    return ForgetReport(plan.added, removed, erased, foreign)
