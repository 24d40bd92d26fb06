"""Backfills: partition planning, the published-date window, the domain filter, progress.

A backfill is split into partitions, each a unit that finishes or fails as a whole:

    warc       one WARC file (CC-NEWS: ~1 GB, tens of thousands of records), streamed
    sitemap    one day of one sitemap (by news:publication_date, else lastmod)
    reextract  the archived articles of one raw WARC file, re-extracted in place

Within a partition, records go in batches of `settings.batch_size` through two task runs each,
a prepare and a load (`backfill_prepare` / `reextract_prepare`, then `load_prepared` /
`reextract_load`), pipelined by `tasks.pipeline.pipelined`: loads run in batch order, and the
last one records the partition as finished in the same transaction that loads its batch, so
after a `kill -9` a rerun skips the finished partitions and redoes the rest; records of a
half-done partition that were loaded are then known URLs, skipped before extraction, and since
loads are idempotent the tables end up as an uninterrupted run's.

Partition keys carry a fingerprint of the filters (and, for re-extraction, the extractor
version): the same command resumes, a different one starts afresh.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from collections import Counter
from functools import partial
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time as dtime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tasks.extract import extract_batch
from tasks.fetch import download, fetch_document
from tasks.load import (finished_partitions, record_partition, reextract_candidates,
                        update_extractions)
from tasks.normalise import clean_domains, domain_of, normalise_batch  # noqa: F401 (clean_domains: the flows' import)
from tasks.records import Article, Hints, RawRef, SourceKind, State, batches_with_last
from tasks.pipeline import Pending, pipelined, prepare_batch
from tasks.settings import Settings
from tasks.sources import (MAX_SITEMAP_BYTES, SourceError, SourceSpec, discover, download_warc, iter_warc)

log = logging.getLogger(__name__)

# CC-NEWS files are about 1 GB; allow a few times that, but not an endless body.
MAX_WARC_DOWNLOAD = 8 * 1024**3


class BackfillRequestError(ValueError):
    """The backfill's parameters do not make a request (no source, both modes, since > until)."""


# --- the date window and the domain filter ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Window:
    """Published dates to keep: whole UTC days from `since` to `until`, both included."""

    since: date | None = None
    until: date | None = None

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.since, dtime(), UTC) if self.since else None

    @property
    def end(self) -> datetime | None:
        """The first moment after the window."""
        return datetime.combine(self.until + timedelta(days=1), dtime(), UTC) if self.until else None

    @property
    def open(self) -> bool:
        return self.since is None and self.until is None

    def admits(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


def apply_window(records: Iterable[Article], window: Window) -> list[Article]:
    """Records published outside the window (or with no date, when there is a window) end `skipped`."""
    if window.open:
        return list(records)
    out = []
    for record in records:
        if not record.done and record.extracted is not None:
            if record.published_at is None:
                record = record.finish(State.SKIPPED, "no-date")
            elif not window.admits(record.published_at):
                record = record.finish(State.SKIPPED, "out-of-range")
        out.append(record)
    return out


def on_domains(url: str, domains: Sequence[str]) -> bool:
    """Whether `url`'s host is one of `domains` or a subdomain of one ("www." ignored); no domains: all."""
    if not domains:
        return True
    host = domain_of(url) or ""
    return any(host == d or host.endswith("." + d) for d in domains)


# --- the request and its partitions -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Request:
    """What one backfill run was asked to do."""

    warcs: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    reextract: bool = False
    window: Window = field(default_factory=Window)
    domains: tuple[str, ...] = ()

    def check(self) -> Request:
        """This request, or BackfillRequestError saying what is wrong with it."""
        if self.reextract and (self.warcs or self.sitemaps):
            raise BackfillRequestError("--reextract works on the archive: give no --warc or --sitemap with it")
        if not (self.reextract or self.warcs or self.sitemaps):
            raise BackfillRequestError("nothing to backfill: give --warc, --sitemap or --reextract")
        if self.sitemaps and (self.window.since is None or self.window.until is None):
            raise BackfillRequestError("a sitemap backfill needs --since and --until")
        if self.window.since and self.window.until and self.window.since > self.window.until:
            raise BackfillRequestError(f"--since {self.window.since} is after --until {self.window.until}")
        return self

    def fingerprint(self, extractor_version: str = "") -> str:
        """A short hash of the filters: a rerun of the same command finds its partitions again."""
        spec = {"since": str(self.window.since), "until": str(self.window.until), "domains": self.domains,
                "reextract": self.reextract, "extractor": extractor_version}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Partition:
    """One unit of a backfill. WARC partitions stream from their file; the others carry their records."""

    key: str
    kind: str  # warc | sitemap | reextract
    location: str  # the WARC file or URL, the sitemap URL, the raw file
    day: str | None = None  # sitemap partitions
    records: tuple[Article, ...] = ()
    size: int = 0  # progress units: bytes of a local WARC, else records

    def row(self, status: str, stats: Counter[str], reason: str | None = None) -> dict[str, Any]:
        """This partition as a `partitions` row."""
        return {"partition_key": self.key, "kind": self.kind, "location": self.location, "status": status,
                "reason": reason, "records": stats["records"], "filtered": stats["filtered"],
                "changed": stats["changed"]}


def plan(request: Request, settings: Settings, db: Path) -> list[Partition]:
    """Every partition of the request, finished or not, in the order they run."""
    fp = request.fingerprint()
    if request.reextract:
        return reextract_partitions(db, request)
    partitions = [p for w in request.warcs for p in warc_partitions(w, fp)]
    for sitemap in request.sitemaps:
        partitions += sitemap_partitions(sitemap, request.window, fp, settings)
    return partitions


def warc_partitions(location: str, fingerprint: str) -> list[Partition]:
    """One partition per WARC file: an http(s) URL, a path, or a glob of paths (sorted)."""
    if location.startswith(("http://", "https://")):
        return [Partition(f"warc:{location}#{fingerprint}", "warc", location)]
    paths = sorted(glob.glob(location)) if glob.has_magic(location) else [location]
    if not paths:  # a glob that matches nothing still shows up, as a failed partition
        paths = [location]
    partitions = []
    for path in paths:
        absolute = str(Path(path).resolve())
        size = os.path.getsize(absolute) if os.path.isfile(absolute) else 0
        partitions.append(Partition(f"warc:{absolute}#{fingerprint}", "warc", absolute, size=size))
    return partitions


def sitemap_partitions(location: str, window: Window, fingerprint: str, settings: Settings) -> list[Partition]:
    """One partition per day of the window that the sitemap lists URLs for (publication date, else lastmod)."""
    fetch = lambda url: fetch_document(url, settings, max_bytes=MAX_SITEMAP_BYTES).body  # noqa: E731
    records = list(discover(SourceSpec(SourceKind.SITEMAP, location), fetch))
    dated = sorted(((_sitemap_date(r), r) for r in records), key=lambda pair: pair[0] or datetime.min.replace(tzinfo=UTC))
    chosen = [(d.date().isoformat(), r) for d, r in dated if d is not None and window.admits(d)]
    log.info("sitemap %s: %d URLs, %d in the window", location, len(records), len(chosen))
    return [Partition(f"sitemap:{location}:{day}#{fingerprint}", "sitemap", location, day,
                      tuple(r for _, r in group), len(group))
            for day, group in ((day, list(g)) for day, g in groupby(chosen, key=lambda pair: pair[0]))]


def _sitemap_date(record: Article) -> datetime | None:
    return record.hints.published or record.hints.lastmod


def reextract_partitions(db: Path, request: Request) -> list[Partition]:
    """The archived articles to re-extract, one partition per raw file."""
    from tasks.extract import EXTRACTOR_VERSION  # read at call time: the version in use now

    fp = request.fingerprint(EXTRACTOR_VERSION)
    rows = reextract_candidates(db, request.window.start, request.window.end, request.domains)
    return [Partition(f"reextract:{path}#{fp}", "reextract", path, records=records, size=len(records))
            for path, records in ((p, tuple(_stored_record(r) for r in g))
                                  for p, g in groupby(rows, key=lambda row: row["raw_path"]))]


def _stored_record(row: dict[str, Any]) -> Article:
    """An `articles` row as the record it was loaded from, ready to extract again."""
    return Article(
        url=row["url"], source=row["source"], source_kind=SourceKind(row["source_kind"]),
        hints=Hints(title=row["feed_title"], published=row["feed_published"], lastmod=row["sitemap_lastmod"],
                    guid=row["feed_guid"], categories=tuple(row["feed_categories"] or ())),
        final_url=row["url"], http_status=row["http_status"], fetched_at=row["fetched_at"],
        raw=RawRef(row["raw_path"], row["raw_offset"], row["raw_length"]), article_id=row["article_id"],
    )


# --- one batch (the task runs) ------------------------------------------------------------------

def backfill_prepare(db: Path, records: list[Article], settings: Settings, window: Window) -> list[Article]:
    """skip known -> fetch (sitemap pages only) -> extract -> normalise -> the date window."""
    return prepare_batch(db, records, settings, partial(apply_window, window=window))


def reextract_prepare(db: Path, records: list[Article], settings: Settings) -> list[Article]:
    """Archived articles extracted and normalised again, keeping their stored ids."""
    extracted = normalise_batch(extract_batch(records, settings, db))
    # The id stays the stored one, even if URL canonicalisation has changed since it was loaded.
    return [new.replace(article_id=old.article_id) for old, new in zip(records, extracted, strict=True)]


def reextract_load(db: Path, run_id: str, records: list[Article],
                   partition: dict[str, Any] | None = None) -> dict[str, int]:
    """Update the re-extracted articles whose extraction changed, in place; the states counted."""
    changed = update_extractions(db, run_id, records, partition)
    counts = Counter(f"{r.state}" for r in records if r.done)
    counts.update(changed=changed, unchanged=sum(not r.done for r in records) - changed)
    return dict(counts)


# --- one partition ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BatchStages:
    """How a partition's batches are run: `prepare(batch)` and then, in batch order,
    `load(prepared, partition_row)`; each returns pending work (a Prefect future in the flow)."""

    prepare: Callable[[list[Article]], Pending[list[Article]]]
    load: Callable[[list[Article], dict[str, Any] | None], Pending[dict[str, int]]]


@dataclass(slots=True)
class PartitionResult:
    partition: Partition
    status: str  # done | failed
    counts: Counter[str]
    seconds: float
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        pages = self.counts["records"] - self.counts["filtered"]
        return {"partition": self.partition.key.split("#")[0], "status": self.status, "reason": self.reason,
                **dict(self.counts), "seconds": round(self.seconds, 2),
                "pages_per_s": round(pages / self.seconds, 1) if self.seconds else 0.0}


def partition_records(partition: Partition, settings: Settings) -> Iterator[Article]:
    """The partition's records: streamed from its WARC file, or the ones it carries."""
    if partition.kind != "warc":
        yield from partition.records
        return
    path = partition.location
    if path.startswith(("http://", "https://")):
        stream = lambda url, out: download(url, out, settings, max_bytes=MAX_WARC_DOWNLOAD)  # noqa: E731
        path = str(download_warc(path, settings.raw_dir / "downloads", stream))
    yield from iter_warc(path, source=partition.location)


def _selected(records: Iterable[Article], domains: Sequence[str], counts: Counter[str]) -> Iterator[Article]:
    """Records on the wanted domains; the others are only counted (before extraction: cheap)."""
    for record in records:
        counts["records"] += 1
        if on_domains(record.url, domains):
            yield record
        else:
            counts["filtered"] += 1


def run_partition(partition: Partition, settings: Settings, domains: Sequence[str], stages: BatchStages,
                  progress: BackfillProgress | None = None) -> PartitionResult:
    """Every batch of one partition (pipelined: tasks/pipeline.py); its last load records it as
    done. A corrupt source fails it, after the batches read before the damage are loaded."""
    started, counts = time.monotonic(), Counter[str]()
    records = _selected(partition_records(partition, settings), domains, counts)

    def load(item: tuple[list[Article], bool], prepared: list[Article]) -> Pending[dict[str, int]]:
        # Built when the load starts, after every earlier load was counted ("changed" adds up).
        return stages.load(prepared, partition.row("done", counts) if item[1] else None)

    try:
        for (batch, _), result in pipelined(_with_last(records, settings.batch_size),
                                            lambda item: stages.prepare(item[0]), load):
            counts.update(result)
            if progress is not None and batch:
                progress.advance(partition, batch)
    except SourceError as exc:
        return PartitionResult(partition, "failed", counts, time.monotonic() - started, str(exc))
    return PartitionResult(partition, "done", counts, time.monotonic() - started)


def _with_last(records: Iterable[Article], size: int) -> Iterator[tuple[list[Article], bool]]:
    """Each batch and whether it is the last (the last load records the partition as done); a
    single empty batch when there are none, so that a partition with nothing to do is still
    recorded as done. A source that fails mid-way: its records before the damage go out in a
    batch that is not the last, then the error (`batches_with_last`)."""
    empty = True
    for batch, last in batches_with_last(records, size):
        empty = False
        yield batch, last
    if empty:
        yield [], True


def run_partitions(partitions: Sequence[Partition], settings: Settings, db: Path, run_id: str,
                   domains: Sequence[str], stages: BatchStages,
                   logger: logging.Logger | logging.LoggerAdapter[Any] = log) -> list[PartitionResult]:
    """Run the partitions an earlier run has not finished, one after another; a failed one is
    recorded with its reason and the others still run."""
    done = finished_partitions(db, [p.key for p in partitions])
    todo = [p for p in partitions if p.key not in done]
    logger.info("backfill: %d partitions, %d already finished, %d to run", len(partitions), len(done), len(todo))
    results = []
    with BackfillProgress(todo) as progress:
        for partition in todo:
            result = run_partition(partition, settings, domains, stages, progress)
            if result.status == "failed":
                record_partition(db, run_id, partition.row("failed", result.counts, result.reason))
            progress.finish(partition)
            _log_result(logger, result)
            results.append(result)
    return results


def _log_result(logger: logging.Logger | logging.LoggerAdapter[Any], result: PartitionResult) -> None:
    info = result.summary()
    states = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()) if k not in ("records", "filtered"))
    if result.status == "failed":
        logger.error("partition %s failed after %d records: %s", info["partition"], info.get("records", 0),
                     result.reason)
    else:
        logger.info("partition %s done: %d records (%d filtered), %s; %.1f s, %.1f pages/s", info["partition"],
                    result.counts["records"], result.counts["filtered"], states or "nothing to do",
                    result.seconds, info["pages_per_s"])


# --- progress -----------------------------------------------------------------------------------

class BackfillProgress:
    """A terminal progress bar (pages, pages/s, ETA); silent when stderr is not a terminal."""

    def __init__(self, partitions: Sequence[Partition], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[pages]} pages"), TextColumn("{task.fields[rate]:.1f} pages/s"),
            TimeRemainingColumn(), console=self.console, disable=not self.console.is_terminal,
        )
        self._task = self._bar.add_task("backfill", total=sum(p.size for p in partitions) or None,
                                        pages=0, rate=0.0)
        self._pages, self._started = 0, time.monotonic()
        self._position: dict[str, int] = {}

    def __enter__(self) -> BackfillProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def advance(self, partition: Partition, batch: Sequence[Article]) -> None:
        """Count a batch: records for carried partitions, bytes read for WARC files."""
        self._pages += len(batch)
        done = self._position.get(partition.key, 0)
        if partition.kind == "warc" and batch[-1].raw is not None:
            end = batch[-1].raw.offset + batch[-1].raw.length
        else:
            end = done + len(batch)
        step, self._position[partition.key] = end - done, end
        rate = self._pages / max(time.monotonic() - self._started, 1e-6)
        self._bar.update(self._task, advance=step, pages=self._pages, rate=rate,
                         description=Path(partition.location).name + (f" {partition.day}" if partition.day else ""))

    def finish(self, partition: Partition) -> None:
        """Move the bar to the end of a finished, failed or skipped partition."""
        step = partition.size - self._position.get(partition.key, 0)
        self._position[partition.key] = partition.size
        self._bar.update(self._task, advance=max(0, step))


# --- Prefect tasks (thin wrappers) --------------------------------------------------------------
from prefect import task  # noqa: E402  (at the bottom: the logic above needs no Prefect)
from prefect.cache_policies import NONE  # noqa: E402

plan_task = task(name="plan-backfill", cache_policy=NONE)(plan)
backfill_prepare_task = task(name="backfill-prepare", cache_policy=NONE, retries=1, retry_delay_seconds=5)(backfill_prepare)
reextract_prepare_task = task(name="reextract-prepare", cache_policy=NONE, retries=1,
                              retry_delay_seconds=5)(reextract_prepare)
reextract_load_task = task(name="reextract-load", cache_policy=NONE, retries=1, retry_delay_seconds=5)(reextract_load)
