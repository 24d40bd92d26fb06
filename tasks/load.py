"""The only module that writes DuckDB: schema, bulk idempotent loads, run bookkeeping, reads.

Every write is one transaction per batch, staged through Arrow (DuckDB loads ~70k rows/s from
Arrow against ~600 rows/s with executemany). The connection is held only for the length of
one transaction, so other processes (`newsflow sql` during a scheduled ingest) can get in
between; opening waits and retries while another process holds the file's lock.

Identity is enforced here, inside the load transaction: the keys a batch would add are looked
up in set-based SQL and handed to `tasks.dedupe`, so a rerun or a retry changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa

from tasks.cluster_store import CLUSTER_SCHEMA, SignedArticle, add_signatures, insert_signatures, rebuild_clusters
from tasks.boilerplate import MAX_WORDS, MIN_ARTICLES, MIN_SHARE, line_key, tokens
from tasks.dedupe import Forgotten, KnownKeys, mark_duplicates, skip_forgotten, url_variants
from tasks.normalise import canonical_url, clean_domains, domain_of
from tasks.records import Article, RawRef, SourceKind, State
from tasks.settings import Settings, size_in_bytes
from tasks.similarity import signatures
from tasks.views import (CREATE_INDEX, INDEX_EXISTS, INDEXED_FINGERPRINT, ROW_HASH, SEARCH, SEARCH_STATE, STALE_EXISTS,
                         UNINDEXED_COUNT, UNINDEXED_SPAN, VIEWS, SearchUnavailableError, export_sql, load_fts)

log = logging.getLogger(__name__)

# The tables that grow with every batch (articles, url_aliases, fetches, article_signatures) have
# no PRIMARY KEY: their keys are kept unique by the load itself (anti-joins, first row wins),
# which is the only writer (STYLE.md) and runs one transaction at a time (`_WRITES`). A DuckDB
# table with an index costs every checkpoint work in proportion to the table, not to what
# changed: the ART index is written out whole (duckdb#24848) and the last row group, text
# included, is rewritten (new row groups are not started for indexed tables, duckdb#21316).
# Measured at 50,000 articles: a checkpoint after a 200-article batch took 0.44-0.85 s with the
# key and 6 ms without, and the automatic checkpoints made batches slower as the archive grew.
# Databases made with the keys are rebuilt without them once (`create_schema`).
SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    article_id        VARCHAR NOT NULL,      -- unique, stable: hash of the canonical URL
    url               VARCHAR NOT NULL,      -- the URL the page was fetched from (after redirects)
    canonical_url     VARCHAR NOT NULL,
    source            VARCHAR,
    source_kind       VARCHAR,
    domain            VARCHAR,
    title             VARCHAR,
    authors           VARCHAR[],
    published_at      TIMESTAMPTZ,
    language          VARCHAR,
    text              VARCHAR,
    word_count        INTEGER,
    content_hash      VARCHAR,
    cluster_id        VARCHAR,
    site_name         VARCHAR,
    description       VARCHAR,
    categories        VARCHAR[],
    tags              VARCHAR[],
    image             VARCHAR,
    page_canonical    VARCHAR,               -- the page's own rel=canonical / og:url, kept as a fact
    feed_guid         VARCHAR,
    feed_title        VARCHAR,
    feed_published    TIMESTAMPTZ,
    feed_categories   VARCHAR[],
    sitemap_lastmod   TIMESTAMPTZ,
    http_status       INTEGER,
    fetched_at        TIMESTAMPTZ,
    raw_path          VARCHAR,               -- the raw response: a WARC record
    raw_offset        BIGINT,
    raw_length        BIGINT,
    extractor_version VARCHAR,
    first_run_id      VARCHAR
);
-- issue 8: where each metadata field came from, and the extraction options and cascade steps.
ALTER TABLE articles ADD COLUMN IF NOT EXISTS field_sources MAP(VARCHAR, VARCHAR);
ALTER TABLE articles ADD COLUMN IF NOT EXISTS extraction_settings VARCHAR;
-- false: the page marks itself paywalled (JSON-LD or meta, tasks/extract.py declared_access);
-- true: marked free; NULL: it says neither (and rows extracted before the column existed).
ALTER TABLE articles ADD COLUMN IF NOT EXISTS free_access BOOLEAN;
-- true: the publisher reserves text-and-data-mining rights or opts out of AI use (tdm-reservation
-- header or meta, robots noai; tasks/extract.py declared_tdm); false: says it does not; NULL: silent.
ALTER TABLE articles ADD COLUMN IF NOT EXISTS tdm_reserved BOOLEAN;
CREATE TABLE IF NOT EXISTS url_aliases (
    url         VARCHAR NOT NULL,            -- unique: canonical form of a URL variant seen for the article
    article_id  VARCHAR NOT NULL,
    first_seen  TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS fetches (
    run_id      VARCHAR NOT NULL,
    url         VARCHAR NOT NULL,
    source      VARCHAR,
    state       VARCHAR NOT NULL,
    reason      VARCHAR,
    http_status INTEGER,
    fetched_at  TIMESTAMPTZ,
    elapsed_ms  INTEGER,
    bytes       BIGINT,
    final_url   VARCHAR,
    article_id  VARCHAR,                     -- the article loaded, or the one this URL duplicates
    recorded_at TIMESTAMPTZ                  -- (run_id, url) is unique
);
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    flow        VARCHAR,
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    status      VARCHAR,
    parameters  JSON,
    discovered  INTEGER,
    loaded      INTEGER,
    duplicate   INTEGER,
    not_article INTEGER,
    skipped     INTEGER,
    blocked     INTEGER,
    failed      INTEGER
);
CREATE TABLE IF NOT EXISTS sources (
    name            VARCHAR PRIMARY KEY,
    kind            VARCHAR,
    location        VARCHAR,
    etag            VARCHAR,
    last_modified   VARCHAR,
    body_hash       VARCHAR,
    last_checked_at TIMESTAMPTZ,
    last_changed_at TIMESTAMPTZ,
    last_status     VARCHAR,
    last_error      VARCHAR
);
CREATE TABLE IF NOT EXISTS partitions (      -- backfill units: a WARC file, a sitemap day, a raw file to re-extract
    partition_key VARCHAR PRIMARY KEY,       -- kind, location and a fingerprint of the filters
    kind          VARCHAR,
    location      VARCHAR,
    status        VARCHAR,                   -- done | failed (a failed one is redone by the next run)
    reason        VARCHAR,
    records       INTEGER,                   -- records read, filtered ones included
    filtered      INTEGER,                   -- left out before extraction (--domain)
    changed       INTEGER,                   -- re-extraction: articles updated
    run_id        VARCHAR,
    finished_at   TIMESTAMPTZ
);
"""

# "How many outlets ran this story, and who ran it first": one row per cluster of copies.
CLUSTERS_VIEW = """
CREATE OR REPLACE VIEW clusters AS
SELECT cluster_id,
       count(*)                                              AS size,
       count(DISTINCT domain)                                AS outlets,
       list(DISTINCT domain ORDER BY domain)                 AS domains,
       min(published_at)                                     AS first_published,
       max(published_at)                                     AS last_published,
       any_value(domain) FILTER (WHERE article_id = cluster_id) AS first_outlet,
       any_value(title) FILTER (WHERE article_id = cluster_id)  AS title
FROM articles
GROUP BY cluster_id;
"""
SCHEMA += CLUSTER_SCHEMA + CLUSTERS_VIEW

STATES = [s.value for s in State]


class DatabaseLockedError(RuntimeError):
    """Another process holds the DuckDB file for longer than we are willing to wait."""


@contextmanager
def connect(db: Path | str, read_only: bool = False,
            wait: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection held only for the `with` block, waiting while another process holds the lock
    (up to `wait` seconds, by default `Settings.lock_wait`). While this process holds the
    database (`held`), any request gets a cursor on the open database instead."""
    db = Path(db)
    keeper = _keeper(db)
    # Reads too: DuckDB refuses a read-only connection to a file this process has open read-write.
    shared = keeper.cursor() if keeper is not None else None
    if shared is not None:
        try:
            yield shared
        except duckdb.FatalException:
            keeper.invalidated()  # the next request reopens the file: see `_Keeper.invalidated`
            raise
        finally:
            keeper.give_back(shared)
        return
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    con = _open(db, read_only, Settings().lock_wait if wait is None else wait)
    try:
        yield con
    finally:
        con.close()


# A write transaction's new rows stay in DuckDB's memory until it commits (they reach the file
# early only a whole row group, 122,880 rows, at a time), so a writer's limit must hold a batch's:
# 5,000 articles of bench/corpus.py in one transaction ran out of memory at 64MB (61 MB in use)
# and fit at 128MB: over 12 KB a record with its fetch row, signature and band rows. 32 KB a
# record leaves room for longer texts.
BATCH_RECORD_BYTES = 32 * 1024


def writer_memory_limit(settings: Settings, records: int | None = None) -> str:
    """DuckDB's memory_limit for connections that write: `duckdb_memory_limit`, or more where a
    batch of `records` (by default `batch_size`) needs it (see BATCH_RECORD_BYTES)."""
    base = size_in_bytes(settings.duckdb_memory_limit)
    return f"{max(base, (records or settings.batch_size) * BATCH_RECORD_BYTES)}B"


def _open(db: Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another process holds the file (and telling it so)."""
    config = {} if read_only else {"memory_limit": writer_memory_limit(Settings())}
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            # DuckDB allows one process per file while a writer has it, even for readers.
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise DatabaseLockedError(
                    f"{db} is locked by another process (waited {wait:.0f} s): {exc}") from exc
            # A process holding it lets us in (`held`); where we cannot write the marker (a
            # read-only folder) we still wait, as for any other lock holder.
            with suppress(OSError):
                _waiting_marker(db).write_text(str(os.getpid()))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# --- holding the database open for a run -------------------------------------------------------
#
# Opening a DuckDB file and closing it again is not free: the close checkpoints (rewrites changed
# tables and their indexes into the file) and an open replays what the write-ahead log holds. At
# 50k articles that was ~0.6 s a batch against ~0.06 s for the load itself, and it grows with the
# database. So a run holds the database open (`held`) and its stages take cursors on it. But
# DuckDB lets one process at a time have a file, and people run `newsflow sql` while a scheduled
# ingest runs: a process that finds the file locked touches `<db>.waiting`, and the holder then
# lets go for RELEASE_SECONDS (its own transactions open and close the file meanwhile, leaving
# gaps for the waiter), then takes it again.
#
# The held database is also closed and opened again after RECYCLE_WRITES write transactions:
# DuckDB keeps what a run's loads freed (its allocator's caches, blocks read back) until the
# database closes. Loading 30,000 articles in batches of 500 into one held database grew the
# process from 334 to 456 MB; reopened every 10 batches it stayed at 260-410 MB, back to ~260
# after each reopen, in the same time. A close takes 0.1-0.5 s at 50,000 articles: it
# checkpoints, which DuckDB does every few batches anyway (its WAL limit).
#
# Closing a DuckDB connection closes every cursor taken from it, so the keeper closes only when
# no other thread has one out (a prepare's read and a load's transaction overlap in the flows);
# a thread that has one out itself is handed another cursor on the same connection.

RELEASE_SECONDS = 3.0
_WAITER_FRESH = 2.0  # a marker touched this recently means someone is waiting now
RECYCLE_WRITES = 4  # batches of the default 500: the growth of ~2,000 articles' loads at most
# How long a request waits for other threads' cursors before it leaves the close to a later one
# (a thread holding a cursor might itself be waiting for this one: never wait for ever).
CLOSE_WAIT_SECONDS = 5.0


class _Keeper:
    """One process's open handle on a database file, let go while another process waits and
    reopened after RECYCLE_WRITES write transactions."""

    def __init__(self, db: Path, wait: float) -> None:
        self.db, self.wait = db, wait
        self._changed = threading.Condition()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._resume_at = 0.0
        self._lent: Counter[int] = Counter()  # cursors out, by thread
        self._writes = 0  # write transactions since the connection opened
        self._broken = False  # DuckDB invalidated the open database (`invalidated`)

    def cursor(self) -> duckdb.DuckDBPyConnection | None:
        """A connection on the held database, or None while it is let go (open normally then)."""
        me = threading.get_ident()
        give_up_at = time.monotonic() + CLOSE_WAIT_SECONDS
        with self._changed:
            while self._con is not None and not self._lent[me]:
                waiter = _someone_waiting(self.db)
                if not (waiter or self._broken or self._writes >= RECYCLE_WRITES):
                    break
                if any(self._lent.values()):  # closing now would close another thread's cursor
                    left = give_up_at - time.monotonic()
                    if left <= 0:  # it keeps its cursor: close at a later request instead
                        break
                    self._changed.wait(timeout=min(left, 0.5))  # then look again: a waiter may have gone
                    continue
                self._close()
                self._resume_at = time.monotonic() + RELEASE_SECONDS if waiter else 0.0
            if self._con is None and time.monotonic() >= self._resume_at:
                self._con = _open(self.db, False, self.wait)
                self._writes, self._broken = 0, False
            if self._con is None:
                return None
            self._lent[me] += 1
            return self._con.cursor()

    def give_back(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Close a cursor `cursor()` handed out (from this thread)."""
        me = threading.get_ident()
        with self._changed:
            cursor.close()
            self._lent[me] -= 1
            if not self._lent[me]:
                del self._lent[me]
            self._changed.notify_all()

    def wrote(self) -> None:
        """Count a committed write transaction (the next cursor may reopen the database)."""
        with self._changed:
            self._writes += 1

    def invalidated(self) -> None:
        """DuckDB raised a fatal error (a checkpoint out of memory, a failed write): it refuses
        every later statement on this database until it is closed and opened again, which
        replays its write-ahead log, so the committed work is all there. Close it at the next
        request (once no other thread holds a cursor), so that a retried task finds it working
        rather than the rest of the run failing."""
        with self._changed:
            self._broken = True
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._close()

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()  # closes its cursors too; the file is checkpointed and let go when no
            self._con = None    # other connection of this process has it open


_holds: dict[str, _Keeper] = {}


def _hold_key(db: Path | str) -> str:
    return str(Path(db).resolve())


def _keeper(db: Path | str) -> _Keeper | None:
    """The keeper holding `db` in this process, if a `held` block does."""
    return _holds.get(_hold_key(db))


@contextmanager
def held(db: Path | str) -> Iterator[None]:
    """Keep `db` open in this process for the block: `connect` hands out cursors on it (see above)."""
    key = _hold_key(db)
    if key in _holds:  # nested: the outer block holds it
        yield
        return
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    keeper = _holds[key] = _Keeper(Path(db), Settings().lock_wait)
    try:
        yield
    finally:
        del _holds[key]
        keeper.close()


def _waiting_marker(db: Path) -> Path:
    return db.with_name(db.name + ".waiting")


def _someone_waiting(db: Path) -> bool:
    """Has another process (not this one, waiting for its own turn) asked for the file just now?"""
    marker = _waiting_marker(db)
    try:
        return time.time() - marker.stat().st_mtime < _WAITER_FRESH and marker.read_text() != str(os.getpid())
    except OSError:
        return False


# One write transaction at a time in this process: the growing tables' keys are kept unique by
# the inserts themselves (see SCHEMA), and two concurrent transactions could each find a key
# missing and both add it. Other processes are kept out by DuckDB's file lock.
_WRITES = threading.RLock()


@contextmanager
def transaction(db: Path | str, records: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on a fresh connection: committed on success, rolled back on error.
    `records`: how many it will hold, where that may be more than a batch (`_memory_for`)."""
    with _WRITES:
        with connect(db) as con, _memory_for(con, records):
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        keeper = _keeper(db)
        if keeper is not None:
            keeper.wrote()


@contextmanager
def _memory_for(con: duckdb.DuckDBPyConnection, records: int | None) -> Iterator[None]:
    """For a block holding more `records` than a batch: DuckDB's limit raised to what its new rows
    need (`writer_memory_limit`), then set back. A connection's limit is set for batches when it
    opens, and 50,000 records in one load ran out of memory under it; the rows leave memory only
    when the transaction ends, so the limit goes back after that, not before."""
    if records is None:  # a transaction of no stated size keeps the connection's limit
        yield
        return
    settings = Settings()  # ~1.8 ms: built only where a size may call for more
    usual, needed = writer_memory_limit(settings), writer_memory_limit(settings, records)
    if size_in_bytes(needed) <= size_in_bytes(usual):
        yield
        return
    con.execute("SET memory_limit = ?", [needed])
    try:
        yield
    finally:
        with suppress(duckdb.Error):  # an invalidated database reopens with the usual limit
            con.execute("SET memory_limit = ?", [usual])


def ensure_schema(db: Path | str) -> None:
    """Create the tables (and the operator's views, `tasks.views`) if they are missing (idempotent)."""
    with transaction(db) as con:
        create_schema(con)
        con.execute(VIEWS)


# The tables that lost their PRIMARY KEY (see SCHEMA).
_GROWING = ["articles", "url_aliases", "fetches", "article_signatures"]


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """SCHEMA, after rebuilding without their key any growing tables an older newsflow made with one."""
    keyed = _set_keyed_tables_aside(con)
    con.execute(SCHEMA)
    for table in keyed:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {table}__keyed")
        con.execute(f"DROP TABLE {table}__keyed")


def _set_keyed_tables_aside(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Rename the growing tables that still have a PRIMARY KEY out of SCHEMA's way; their names."""
    keyed = [t for (t,) in con.execute(
        "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
        "AND database_name = current_database() AND schema_name = 'main' AND list_contains(?, table_name)",
        [_GROWING]).fetchall()]
    for table in keyed:
        log.info("rebuilding table %s without its PRIMARY KEY (one-off; see tasks/load.py SCHEMA)", table)
        con.execute(f"ALTER TABLE {table} RENAME TO {table}__keyed")
    return sorted(keyed)


# ---------------------------------------------------------------- reads used by the pipeline


def known_urls(db: Path | str, records: Sequence[Article]) -> dict[str, str]:
    """Which canonical URL variants of these records already map to an article."""
    keys = sorted({v for r in records if not r.done for v in url_variants(r)})
    if not keys or not Path(db).exists():
        return {}
    # Read-write although it only reads: the pipeline calls it while a load holds the file open
    # read-write in this process, and DuckDB refuses a second configuration of one file.
    with connect(db) as con:
        return _known_urls(con, keys)


def _known_urls(con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, str]:
    staged = pa.table({"url": pa.array(keys, pa.string())})  # noqa: F841 (used by name in SQL)
    rows = con.execute(
        "SELECT a.url, a.article_id FROM url_aliases a JOIN staged s USING (url)"
    ).fetchall()
    return dict(rows)


def _known_content(con: duckdb.DuckDBPyConnection, hashes: list[str]) -> dict[tuple[str, str | None], str]:
    staged = pa.table({"content_hash": pa.array(hashes, pa.string())})  # noqa: F841
    rows = con.execute(
        "SELECT a.content_hash, a.domain, min(a.article_id) FROM articles a "
        "JOIN staged s USING (content_hash) GROUP BY ALL"
    ).fetchall()
    return {(content_hash, domain): article for content_hash, domain, article in rows}


# ---------------------------------------------------------------- the batch load


def load_batch(db: Path | str, run_id: str, records: Sequence[Article],
               partition: dict[str, Any] | None = None) -> list[Article]:
    """Load one batch in one transaction: dedupe against the DB, insert new articles and their
    URL aliases, and record one `fetches` row per record. Returns the records in final states.
    With `partition` (a `partitions` row), the batch is a backfill partition's last and the
    partition is recorded as finished in the same transaction."""
    now = datetime.now(UTC)
    with transaction(db, len(records)) as con:
        # a `newsflow forget` that came while this batch was fetched still holds
        records = skip_forgotten(records, _forgotten(con))
        pending = [r for r in records if not r.done and r.article_id]
        known = KnownKeys(
            urls=_known_urls(con, sorted({v for r in pending for v in url_variants(r)})),
            content=_known_content(con, sorted({r.content_hash for r in pending if r.content_hash})),
        )
        final = [_settle(r) for r in mark_duplicates(records, known)]
        new = [r for r in final if r.state is State.LOADED]
        if new:
            _insert_articles(con, run_id, new)
            _cluster(con, new)
        _insert_aliases(con, [r for r in final if r.article_id and r.state in (State.LOADED, State.DUPLICATE)], now)
        _insert_fetches(con, run_id, final, now)
        if partition is not None:
            _upsert_partition(con, partition, run_id, now)
    return final


def _settle(record: Article) -> Article:
    """A record that survived dedupe is loaded; one that reached load unnormalised is a bug, kept visibly."""
    if record.done:
        return record
    if not record.article_id or record.extracted is None:
        return record.finish(State.FAILED, "internal:not-normalised")
    return record.finish(State.LOADED)


_FIELD_SOURCES = pa.map_(pa.string(), pa.string())  # the records' tuples of pairs and of strings go in as they are
_STRINGS = pa.list_(pa.string())


def _extraction_columns(records: Sequence[Article]) -> dict[str, Any]:
    """The Arrow columns that extraction and normalisation decide (inserted, and rewritten by re-extraction)."""
    ex = [r.extracted for r in records]
    return {
        "article_id": [r.article_id for r in records],
        "title": [r.title for r in records],
        "authors": pa.array([r.authors for r in records], _STRINGS),
        "published_at": pa.array([r.published_at for r in records], pa.timestamp("us", tz="UTC")),
        "language": [r.language for r in records],
        "text": [e.text for e in ex],
        "word_count": pa.array([r.word_count for r in records], pa.int32()),
        "content_hash": [r.content_hash for r in records],
        "site_name": [e.site_name for e in ex],
        "description": [e.description for e in ex],
        "categories": pa.array([e.categories for e in ex], _STRINGS),
        "tags": pa.array([e.tags for e in ex], _STRINGS),
        "image": [e.image for e in ex],
        "page_canonical": [e.canonical_link for e in ex],
        "extractor_version": [e.extractor_version for e in ex],
        "field_sources": pa.array([e.field_sources for e in ex], _FIELD_SOURCES),
        "extraction_settings": [e.extraction_settings or None for e in ex],
        "free_access": pa.array([e.free_access for e in ex], pa.bool_()),
        "tdm_reserved": pa.array([e.tdm_reserved for e in ex], pa.bool_()),
    }


def _raw_columns(records: Sequence[Article]) -> dict[str, Any]:
    """The Arrow columns of where each record's raw response is archived."""
    return {
        "raw_path": [r.raw.path if r.raw else None for r in records],
        "raw_offset": pa.array([r.raw.offset if r.raw else None for r in records], pa.int64()),
        "raw_length": pa.array([r.raw.length if r.raw else None for r in records], pa.int64()),
    }


def _first_per(records: Sequence[Article], key: Callable[[Article], Any]) -> list[Article]:
    """The first record of each key, in order: the growing tables' keys are unique (see SCHEMA)."""
    firsts: dict[Any, Article] = {}
    for record in records:
        firsts.setdefault(key(record), record)
    return list(firsts.values())


def _insert_articles(con: duckdb.DuckDBPyConnection, run_id: str, records: Sequence[Article]) -> None:
    records = _first_per(records, lambda r: r.article_id)
    staged = pa.table({  # noqa: F841 (used by name in SQL)
        **_extraction_columns(records),
        "url": [r.final_url or r.url for r in records],
        "canonical_url": [r.canonical_url for r in records],
        "source": [r.source for r in records],
        "source_kind": [str(r.source_kind) for r in records],
        "domain": [r.domain for r in records],
        "feed_guid": [r.hints.guid for r in records],
        "feed_title": [r.hints.title for r in records],
        "feed_published": pa.array([r.hints.published for r in records], pa.timestamp("us", tz="UTC")),
        "feed_categories": pa.array([r.hints.categories for r in records], _STRINGS),
        "sitemap_lastmod": pa.array([r.hints.lastmod for r in records], pa.timestamp("us", tz="UTC")),
        "http_status": pa.array([r.http_status for r in records], pa.int32()),
        "fetched_at": pa.array([r.fetched_at for r in records], pa.timestamp("us", tz="UTC")),
        **_raw_columns(records),
    })
    # cluster_id is the article itself until near-duplicate clustering assigns one.
    con.execute(
        "INSERT INTO articles BY NAME "
        "SELECT s.*, s.article_id AS cluster_id, ? AS first_run_id FROM staged s "
        "ANTI JOIN articles USING (article_id)",
        [run_id],
    )


def _cluster(con: duckdb.DuckDBPyConnection, records: Sequence[Article]) -> int:
    """Sign the new articles and join them to the clusters of the stored texts they nearly repeat."""
    return add_signatures(con, [SignedArticle(r.article_id, r.published_at, r.fetched_at, _signature(r))  # type: ignore[arg-type]
                                for r in records])


def _signature(record: Article) -> np.ndarray | None:
    """The MinHash the extraction worker computed, or (records built elsewhere) one computed now."""
    ex = record.extracted
    if ex is not None and ex.signature is not None:
        return np.frombuffer(ex.signature, dtype="<u4")
    [signature] = signatures([ex.text if ex else ""])
    return signature


def _insert_aliases(con: duckdb.DuckDBPyConnection, records: Sequence[Article], now: datetime) -> None:
    """Each record's URL variants as aliases of its article, where no article has them yet."""
    pairs: dict[str, str] = {}
    for r in records:
        for variant in url_variants(r):
            pairs.setdefault(variant, r.article_id)  # type: ignore[arg-type]
    if not pairs:
        return
    staged = pa.table({"url": list(pairs), "article_id": list(pairs.values())})  # noqa: F841
    con.execute("INSERT INTO url_aliases SELECT s.url, s.article_id, ? FROM staged s ANTI JOIN url_aliases USING (url)",
                [now])


def _insert_fetches(con: duckdb.DuckDBPyConnection, run_id: str, records: Sequence[Article],
                    now: datetime) -> None:
    # A retried task may load the same batch twice: the first row for (run, url) stands.
    records = _first_per(records, lambda r: r.url)
    staged = pa.table({  # noqa: F841
        "url": [r.url for r in records],
        "source": [r.source for r in records],
        "state": [str(r.state) for r in records],
        "reason": [r.reason for r in records],
        "http_status": pa.array([r.http_status for r in records], pa.int32()),
        "fetched_at": pa.array([r.fetched_at for r in records], pa.timestamp("us", tz="UTC")),
        "elapsed_ms": pa.array([r.elapsed_ms for r in records], pa.int32()),
        "bytes": pa.array([r.n_bytes for r in records], pa.int64()),
        "final_url": [r.final_url for r in records],
        "article_id": [r.article_id for r in records],
    })
    con.execute(
        "INSERT INTO fetches BY NAME SELECT s.*, $run AS run_id, $now AS recorded_at FROM staged s "
        "ANTI JOIN (SELECT url FROM fetches WHERE run_id = $run) USING (url)",
        {"run": run_id, "now": now},
    )


# ---------------------------------------------------------------- backfill partitions and re-extraction

_PARTITION_COLUMNS = ["partition_key", "kind", "location", "status", "reason", "records", "filtered", "changed"]


def _upsert_partition(con: duckdb.DuckDBPyConnection, row: dict[str, Any], run_id: str, now: datetime) -> None:
    values = [row.get(c) for c in _PARTITION_COLUMNS]
    con.execute(
        f"INSERT OR REPLACE INTO partitions ({', '.join(_PARTITION_COLUMNS)}, run_id, finished_at) "
        f"VALUES ({', '.join('?' * (len(values) + 2))})",
        [*values, run_id, now],
    )


def record_partition(db: Path | str, run_id: str, row: dict[str, Any]) -> None:
    """Record a partition that ended without a final load (failed, or nothing to load)."""
    with transaction(db) as con:
        create_schema(con)
        _upsert_partition(con, row, run_id, datetime.now(UTC))


def finished_partitions(db: Path | str, keys: Sequence[str]) -> set[str]:
    """Which of these partitions an earlier run finished (status done)."""
    if not keys or not Path(db).exists():
        return set()
    staged = pa.table({"partition_key": pa.array(list(keys), pa.string())})  # noqa: F841
    with connect(db, read_only=True) as con:
        if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'partitions'").fetchall():
            return set()
        rows = con.execute("SELECT p.partition_key FROM partitions p JOIN staged s USING (partition_key) "
                           "WHERE p.status = 'done'").fetchall()
    return {key for (key,) in rows}


# What an article row needs to be rebuilt as a record for re-extraction.
REEXTRACT_COLUMNS = ["article_id", "url", "source", "source_kind", "http_status", "fetched_at",
                     "raw_path", "raw_offset", "raw_length", "feed_guid", "feed_title", "feed_published",
                     "feed_categories", "sitemap_lastmod"]


def reextract_candidates(db: Path | str, since: datetime | None = None, until: datetime | None = None,
                         domains: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Articles with a raw page, published in [since, until) and on these domains (or their
    subdomains), ordered by raw file and offset."""
    where = ["raw_path IS NOT NULL"]
    params: list[Any] = []
    if since is not None:
        where.append("published_at >= ?")
        params.append(since)
    if until is not None:
        where.append("published_at < ?")
        params.append(until)
    if domains:
        where.append("(" + " OR ".join(["domain = ? OR domain LIKE ?"] * len(domains)) + ")")
        params += [v for d in domains for v in (d, f"%.{d}")]
    with connect(db, read_only=True) as con:
        cur = con.execute(f"SELECT {', '.join(REEXTRACT_COLUMNS)} FROM articles WHERE {' AND '.join(where)} "
                          "ORDER BY raw_path, raw_offset", params)
        return [dict(zip(REEXTRACT_COLUMNS, row, strict=True)) for row in cur.fetchall()]


# The columns extraction and normalisation decide; re-extraction rewrites only these.
_EXTRACTED_COLUMNS = ["title", "authors", "published_at", "language", "text", "word_count", "content_hash",
                      "site_name", "description", "categories", "tags", "image", "page_canonical", "free_access",
                      "tdm_reserved"]


def update_extractions(db: Path | str, run_id: str, records: Sequence[Article],
                       partition: dict[str, Any] | None = None) -> int:
    """Update re-extracted articles in place (same `article_id`), in one transaction.

    Only rows where an extracted column differs are touched, and they get the new
    `extractor_version`; rows whose extraction is unchanged are left alone. Returns how many
    rows changed. With `partition`, it is recorded as finished in the same transaction.
    """
    fresh = [r for r in records if r.extracted is not None and r.article_id and not r.done]
    with transaction(db, len(fresh)) as con:
        changed = _update_articles(con, fresh) if fresh else 0
        if partition is not None:
            _upsert_partition(con, {**partition, "changed": (partition.get("changed") or 0) + changed},
                              run_id, datetime.now(UTC))
    return changed


def _update_articles(con: duckdb.DuckDBPyConnection, records: Sequence[Article]) -> int:
    staged = pa.table(_extraction_columns(records))
    _leave_search_index(con, staged)
    sets = ", ".join(f"{c} = s.{c}" for c in [*_EXTRACTED_COLUMNS, "extractor_version", "field_sources",
                                                 "extraction_settings"])
    differs = " OR ".join(f"a.{c} IS DISTINCT FROM s.{c}" for c in _EXTRACTED_COLUMNS)
    updated = {article_id for (article_id,) in con.execute(
        f"UPDATE articles AS a SET {sets} FROM staged s WHERE a.article_id = s.article_id AND ({differs}) "
        "RETURNING a.article_id").fetchall()}
    _resign(con, [r for r in records if r.article_id in updated])
    return len(updated)


def _leave_search_index(con: duckdb.DuckDBPyConnection, staged: pa.Table) -> None:
    """Before `articles` takes the titles and texts in `staged`: the indexed articles whose title
    or text changes become `search_stale` (searches score their new version on the fly) and leave
    the fingerprint of what the index is trusted for, so the run need not rebuild the index over
    the whole archive for them (tasks/views.py); `refresh_search` rebuilds once too many wait."""
    if not con.execute(INDEX_EXISTS).fetchone()[0]:
        return
    con.execute(SEARCH_STATE)  # a database an older newsflow indexed
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE leaving AS
        SELECT a.article_id, {ROW_HASH} AS row_hash FROM articles a JOIN staged s USING (article_id)
        SEMI JOIN fts_main_articles.docs d ON d.name = a.article_id
        ANTI JOIN search_stale t ON t.article_id = a.article_id
        WHERE a.title IS DISTINCT FROM s.title OR a.text IS DISTINCT FROM s.text""")
    con.execute("UPDATE search_index_state SET articles = articles - (SELECT count(*) FROM leaving), "
                "fingerprint = xor(fingerprint, (SELECT coalesce(bit_xor(row_hash), 0) FROM leaving))")
    con.execute("INSERT INTO search_stale SELECT article_id FROM leaving")
    con.execute("DROP TABLE leaving")


def _resign(con: duckdb.DuckDBPyConnection, records: Sequence[Article]) -> None:
    """Replace the similarity signatures of re-extracted articles (their clusters are then rebuilt
    by `recluster`: a changed text may leave or join a cluster, or stop bridging two)."""
    if not records:
        return
    staged_ids = pa.table({"article_id": [r.article_id for r in records]})  # noqa: F841
    con.execute("DELETE FROM signature_bands WHERE sig_key IN "
                "(SELECT sig_key FROM article_signatures JOIN staged_ids USING (article_id))")
    con.execute("DELETE FROM article_signatures WHERE article_id IN (SELECT article_id FROM staged_ids)")
    signed = [(r, sig) for r in records if (sig := _signature(r)) is not None]
    if signed:
        insert_signatures(con, [r.article_id for r, _ in signed], [r.published_at for r, _ in signed],
                          [r.fetched_at for r, _ in signed], np.stack([sig for _, sig in signed]))


def recluster(db: Path | str) -> int:
    """Rebuild every cluster from the stored signatures, with the articles' current dates;
    returns how many articles changed cluster (after a re-extraction)."""
    with transaction(db) as con:
        con.execute("UPDATE article_signatures AS s SET published_at = a.published_at FROM articles a "
                    "WHERE a.article_id = s.article_id AND a.published_at IS DISTINCT FROM s.published_at")
        return rebuild_clusters(con)


# ---------------------------------------------------------------- revisits (tasks/revisit.py)

# `articles` holds each article's newest version; a revisit that finds the headline or the story
# changed first copies the stored version into `article_versions`, with how the next one differs.
REVISIT_SCHEMA = """
ALTER TABLE articles ADD COLUMN IF NOT EXISTS version INTEGER DEFAULT 1;  -- 1: as first loaded
-- when the row's version was fetched, if a revisit replaced the first (`fetched_at` stays the
-- first fetch: the lag, daily counts and clusters' "who ran it first" go by it)
ALTER TABLE articles ADD COLUMN IF NOT EXISTS revised_at TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS article_versions (     -- (article_id, version) is unique
    article_id         VARCHAR NOT NULL,
    version            INTEGER NOT NULL,           -- the replaced version; version + 1 replaced it
    title              VARCHAR,
    text               VARCHAR,
    word_count         INTEGER,
    content_hash       VARCHAR,
    published_at       TIMESTAMPTZ,
    fetched_at         TIMESTAMPTZ,                -- when this version was fetched
    raw_path           VARCHAR,                    -- its raw response
    raw_offset         BIGINT,
    raw_length         BIGINT,
    extractor_version  VARCHAR,
    replaced_at        TIMESTAMPTZ,                -- when a revisit fetched the next version
    replaced_by_run    VARCHAR,
    title_changed      BOOLEAN,
    diff               VARCHAR,                    -- story lines removed (-) and added (+) by the next version
    correction         VARCHAR,                    -- a line the next version added marking a correction or update
    extractor_changed  BOOLEAN                     -- the next version was extracted by another extractor_version
);
CREATE TABLE IF NOT EXISTS revisits (             -- (run_id, article_id) is unique
    run_id        VARCHAR NOT NULL,
    article_id    VARCHAR NOT NULL,
    url           VARCHAR,
    revisited_at  TIMESTAMPTZ,
    outcome       VARCHAR NOT NULL,                -- changed | unchanged | gone | a fetch state (failed, blocked...)
    reason        VARCHAR,
    http_status   INTEGER,
    version       INTEGER                          -- the article's version after the revisit
);
CREATE OR REPLACE VIEW article_changes AS
SELECT v.article_id, a.url, a.domain, v.version + 1 AS version, v.replaced_at AS seen_at, v.replaced_by_run AS run_id,
       v.fetched_at AS previous_fetched_at, v.title AS title_before,
       coalesce(nxt.title, a.title) AS title_after, v.title_changed,
       v.word_count AS words_before, coalesce(nxt.word_count, a.word_count) AS words_after,
       v.diff, v.correction, v.extractor_changed
FROM article_versions v
JOIN articles a USING (article_id)
LEFT JOIN article_versions nxt ON nxt.article_id = v.article_id AND nxt.version = v.version + 1;
"""
SCHEMA += REVISIT_SCHEMA

# A revisit run's counts, in the order they are shown: each revisit's outcome, and `not_modified`,
# those of the unchanged whose site answered 304 to the conditional GET (no page was downloaded).
REVISIT_OUTCOMES = ["changed", "unchanged", "not_modified", "gone",
                    *[s for s in STATES if s not in ("loaded", "duplicate")]]


def revisit_candidates(db: Path | str, after_hours: Sequence[float], now: datetime,
                       limit: int) -> list[Article]:
    """The articles due for a revisit at `now`, youngest first, at most `limit`.

    An article's age is counted from its first fetch. It is due for the last of `after_hours`
    it has reached when no revisit has yet been made at that age or later, and while it is under
    twice that age (an article first seen in an old archive is not revisited). Articles read
    from WARC archives are not revisited: their pages were fetched by someone else, maybe years
    ago. A revisit that failed counts: each age is tried once. Each record's `raw` is where the
    stored version was read from (a revisit reads its validators there: tasks/revisit.py).
    """
    if not after_hours or limit <= 0 or not Path(db).exists():
        return []
    with connect(db, read_only=True) as con:
        if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'revisits'").fetchall():
            return []  # a database no run of this newsflow has opened yet
        rows = con.execute(
            """WITH aged AS (
                SELECT article_id, url, source, source_kind, raw_path, raw_offset, raw_length, fetched_at AS since
                FROM articles
                WHERE fetched_at IS NOT NULL AND source_kind IS DISTINCT FROM 'warc'),
            revisited AS (SELECT r.article_id, epoch(r.revisited_at) - epoch(g.since) AS age
                          FROM revisits r JOIN aged g USING (article_id)),
            reached AS (  -- how many of the ages an article had reached at its revisits, and now
                SELECT g.*, epoch($now) - epoch(g.since) AS age, len(list_filter($hours, lambda h: h * 3600 <= age)) AS step,
                       coalesce(d.done, 0) AS done
                FROM aged g LEFT JOIN (SELECT article_id, max(len(list_filter($hours, lambda h: h * 3600 <= age))) AS done
                                       FROM revisited GROUP BY article_id) d USING (article_id))
            SELECT article_id, url, source, source_kind, raw_path, raw_offset, raw_length FROM reached
            WHERE step > done AND age < 2 * 3600 * $hours[step]
            ORDER BY since DESC, article_id LIMIT $limit""",
            {"hours": [float(h) for h in after_hours], "now": now, "limit": limit}).fetchall()
    return [Article(url=url, source=source or "revisit", article_id=article_id, source_kind=_source_kind(kind),
                    raw=RawRef(path, offset, length) if path else None)
            for article_id, url, source, kind, path, offset, length in rows]


# Columns of an article that a revisit's new version replaces (with `_EXTRACTED_COLUMNS`).
_REVISIT_FETCH_COLUMNS = ["http_status", "revised_at", "raw_path", "raw_offset", "raw_length"]


class _Stored(NamedTuple):
    """What `record_revisits` compares a revisited page with: the article as stored."""

    title: str | None
    text: str | None
    content_hash: str | None
    domain: str | None
    version: int
    fetched_at: datetime
    canonical_url: str


def record_revisits(db: Path | str, run_id: str, records: Sequence[Article]) -> dict[str, int]:
    """Record one batch of revisits in one transaction; the count of each outcome.

    A page whose headline or story lines differ from the stored version (`tasks.revisit.compare`)
    becomes the article's next version: the stored one is copied into `article_versions` with the
    difference, `articles` gets the new one (and its similarity signature). A page taken down
    (404, 410, or a redirect to another page: `tasks.revisit.moved_elsewhere`) is "gone" and the
    article stays as last seen; other failures keep their state and reason. Every record gets one
    `revisits` row; a retried batch changes nothing more.
    """
    from tasks.revisit import GONE_STATUSES, NOT_MODIFIED, compare, moved_elsewhere  # it reads through this module

    now = datetime.now(UTC)
    with transaction(db, len(records)) as con:
        records = skip_forgotten(records, _forgotten(con))  # a `newsflow forget` that came during the fetch
        ids = sorted({r.article_id for r in records if r.article_id})
        staged_ids = pa.table({"article_id": pa.array(ids, pa.string())})  # noqa: F841
        stored = {row[0]: _Stored(*row[1:]) for row in con.execute(
            f"SELECT article_id, {', '.join(_Stored._fields)} FROM articles SEMI JOIN staged_ids USING (article_id)"
        ).fetchall()}
        boilerplate = _site_boilerplate(con, sorted({old.domain for old in stored.values() if old.domain}))
        outcomes: list[tuple[Article, str, str | None, int | None]] = []
        changes: list[tuple[Article, Any]] = []
        moved: list[Article] = []  # a new slug or rel=canonical with the same story: its new URLs lead here
        for record in records:
            old = stored.get(record.article_id or "")
            if old is None:  # deleted since it was picked (forgotten): nothing to compare with
                outcomes.append((record, "skipped", record.reason or "not-stored", None))
                continue
            if record.reason == NOT_MODIFIED:  # a 304 to the revisit's conditional GET
                outcomes.append((record, "unchanged", NOT_MODIFIED, old.version))
                continue
            if record.done or record.extracted is None:
                gone = record.http_status in GONE_STATUSES
                outcomes.append((record, "gone" if gone else str(record.state or State.FAILED),
                                 record.reason or "internal:not-extracted", old.version))
                continue
            if moved_elsewhere(old.canonical_url, record.canonical_url, old.text, record.extracted.text):
                outcomes.append((record, "gone", "moved-elsewhere", old.version))
                continue
            if record.canonical_url != old.canonical_url:
                moved.append(record)
            same = old.content_hash == record.content_hash and old.title == record.title
            change = None if same else compare(old.title, old.text, record.title, record.extracted.text,
                                               boilerplate.get(old.domain or "", frozenset()))
            if change is None:
                outcomes.append((record, "unchanged", None, old.version))
            else:
                changes.append((record, change))
                outcomes.append((record, "changed", None, old.version + 1))
        if changes:
            _new_versions(con, run_id, changes, {i: old.fetched_at for i, old in stored.items()})
        if moved:
            _insert_aliases(con, moved, now)
        staged = pa.table({  # noqa: F841
            "article_id": [r.article_id for r, *_ in outcomes],
            "url": [r.final_url or r.url for r, *_ in outcomes],
            "revisited_at": pa.array([r.fetched_at or now for r, *_ in outcomes], pa.timestamp("us", tz="UTC")),
            "outcome": [o for _, o, _, _ in outcomes],
            "reason": pa.array([why for *_, why, _ in outcomes], pa.string()),
            "http_status": pa.array([r.http_status for r, *_ in outcomes], pa.int32()),
            "version": pa.array([v for *_, v in outcomes], pa.int32()),
        })
        con.execute("INSERT INTO revisits BY NAME SELECT s.*, $run AS run_id FROM staged s "
                    "ANTI JOIN (SELECT article_id FROM revisits WHERE run_id = $run) USING (article_id)",
                    {"run": run_id})
    counts = Counter(o for _, o, _, _ in outcomes)
    counts["not_modified"] = sum(1 for _, _, why, _ in outcomes if why == NOT_MODIFIED)
    return {k: n for k, n in counts.items() if n}


def revisit_changes(db: Path | str, run_id: str) -> list[dict[str, Any]]:
    """The changes one revisit run found (`article_changes` rows), newest article first."""
    columns = ["article_id", "url", "title_before", "title_after", "words_before", "words_after", "correction"]
    with connect(db, read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(columns)} FROM article_changes WHERE run_id = ? "
                           "ORDER BY previous_fetched_at DESC, article_id", [run_id]).fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _new_versions(con: duckdb.DuckDBPyConnection, run_id: str, changes: Sequence[tuple[Article, Any]],
                  first_fetched: dict[str, datetime]) -> None:
    """The stored versions into `article_versions`, then the revisited ones into `articles`
    (`revised_at` their fetch; `fetched_at`, the article's first fetch, stays, in the similarity
    signature too)."""
    records = [r for r, _ in changes]
    staged = pa.table({  # noqa: F841
        **_extraction_columns(records),
        "http_status": pa.array([r.http_status for r in records], pa.int32()),
        "revised_at": pa.array([r.fetched_at for r in records], pa.timestamp("us", tz="UTC")),  # fetched: extracted
        **_raw_columns(records),
        "title_changed": [c.title_changed for _, c in changes],
        "diff": [c.diff for _, c in changes],
        "correction": pa.array([c.correction for _, c in changes], pa.string()),
    })
    con.execute(
        """INSERT INTO article_versions BY NAME
        SELECT a.article_id, a.version, a.title, a.text, a.word_count, a.content_hash, a.published_at,
               coalesce(a.revised_at, a.fetched_at) AS fetched_at, a.raw_path, a.raw_offset, a.raw_length,
               a.extractor_version,
               s.revised_at AS replaced_at, $run AS replaced_by_run, s.title_changed, s.diff, s.correction,
               a.extractor_version IS DISTINCT FROM s.extractor_version AS extractor_changed
        FROM articles a JOIN staged s USING (article_id)""", {"run": run_id})
    _leave_search_index(con, staged)
    sets = ", ".join(f"{c} = s.{c}" for c in [*_EXTRACTED_COLUMNS, *_REVISIT_FETCH_COLUMNS, "extractor_version",
                                                 "field_sources", "extraction_settings"])
    con.execute(f"UPDATE articles AS a SET {sets}, version = a.version + 1 FROM staged s "
                "WHERE a.article_id = s.article_id")
    _resign(con, [r.replace(fetched_at=first_fetched[r.article_id]) for r in records])  # type: ignore[index]


# ---------------------------------------------------------------- forgetting (takedowns)
#
# `newsflow forget` removes what a URL or a domain put in the database (articles, their aliases,
# signatures and fetch log, a domain's learned boilerplate) and records the rule, so that no later
# run fetches or stores it again (tasks/dedupe.py `skip_forgotten`, before fetching and at load).
# It runs in two transactions with the raw archive's erasure between them (flows/forget.py): the
# first records the rules and says which URLs the archive may hold for them, the second deletes.
# Each step can be repeated: a run cut short is finished by running the same command again.

FORGOTTEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS forgotten (  -- `newsflow forget`: removed, and never fetched or stored again
    kind      VARCHAR NOT NULL,          -- 'url' (a canonical URL) or 'domain' (its subdomains too)
    value     VARCHAR NOT NULL,
    reason    VARCHAR,
    added_at  TIMESTAMPTZ,
    PRIMARY KEY (kind, value)
);
"""
SCHEMA += FORGOTTEN_SCHEMA

# The host of a stored URL in SQL, as `tasks.normalise.domain_of` gives it (no userinfo, port
# or leading "www."), to match fetch rows against forgotten domains without reading them all.
_HOST = "regexp_replace(lower(regexp_extract({0}, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)', 1)), '^www[.]', '')"
_DOMAIN_RULE = "(r.kind = 'domain' AND ({0} = r.value OR suffix({0}, '.' || r.value)))"


@dataclass(frozen=True, slots=True)
class ForgetPlan:
    """What the rules cover, for the archive's erasure before the rows go."""

    added: int  # rules that were new
    rules: Forgotten  # every rule, old and new
    urls: frozenset[str]  # canonical forms of every URL stored for what the rules cover
    raw_paths: frozenset[str]  # WARC files holding the covered articles' raw pages


def _forgotten(con: duckdb.DuckDBPyConnection) -> Forgotten:
    rows = con.execute("SELECT kind, value FROM forgotten").fetchall()
    return Forgotten(frozenset(v for k, v in rows if k == "url"), frozenset(v for k, v in rows if k == "domain"))


def forgotten_rules(db: Path | str) -> Forgotten:
    """The URLs and domains `newsflow forget` removed (none for a database that has no table yet)."""
    if not Path(db).exists():
        return Forgotten()
    with connect(db) as con:  # read-write although it only reads: see `known_urls`
        if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'forgotten'").fetchall():
            return Forgotten()
        return _forgotten(con)


def add_forgotten(db: Path | str, urls: Sequence[str], domains: Sequence[str], reason: str | None) -> ForgetPlan:
    """Record URLs and domains as forgotten; what they cover (the first of forget's two steps)."""
    rules = sorted({("url", canonical_url(u.strip())) for u in urls if u.strip()}
                   | {("domain", d) for d in clean_domains(domains)})
    if not rules:
        raise ValueError("nothing to forget: give at least one URL or domain")
    staged = pa.table({"kind": [k for k, _ in rules], "value": [v for _, v in rules]})  # noqa: F841
    with transaction(db) as con:
        con.execute(FORGOTTEN_SCHEMA)
        added = con.execute("INSERT INTO forgotten SELECT kind, value, ?, ? FROM staged "
                            "ANTI JOIN forgotten USING (kind, value) RETURNING kind",
                            [reason, datetime.now(UTC)]).fetchall()
        forgotten = _forgotten(con)
        ids = _covered_articles(con)
        fetched = _covered_fetches(con, forgotten, ids)
        stored = con.execute(
            "SELECT a.url, a.canonical_url, a.raw_path FROM articles a SEMI JOIN forgotten_ids USING (article_id) "
            "UNION ALL SELECT u.url, NULL, NULL FROM url_aliases u SEMI JOIN forgotten_ids USING (article_id)"
        ).fetchall()
        con.execute("DROP TABLE forgotten_ids")
    seen = [u for row in stored for u in row[:2] if u] + [u for _, url, final in fetched for u in (url, final) if u]
    return ForgetPlan(len(added), forgotten, frozenset(canonical_url(u) for u in seen),
                      frozenset(path for *_, path in stored if path))


def delete_forgotten(db: Path | str) -> dict[str, int]:
    """Delete every row the forgotten rules cover, and rebuild the clusters they were part of
    (the second step). Returns how many rows went, by table."""
    with transaction(db) as con:
        con.execute(FORGOTTEN_SCHEMA + REVISIT_SCHEMA)  # a database older than either
        forgotten = _forgotten(con)
        ids = _covered_articles(con)
        con.register("fetch_rows", pa.table({"row": pa.array([row for row, *_ in _covered_fetches(con, forgotten, ids)],
                                                             pa.int64())}))
        removed = {
            "signature_bands": _deleted(con, "DELETE FROM signature_bands WHERE sig_key IN (SELECT sig_key FROM "
                                             "article_signatures SEMI JOIN forgotten_ids USING (article_id))"),
            "article_signatures": _deleted(con, "DELETE FROM article_signatures WHERE article_id IN "
                                                "(SELECT article_id FROM forgotten_ids)"),
            "url_aliases": _deleted(con, "DELETE FROM url_aliases WHERE article_id IN (SELECT article_id FROM forgotten_ids)"),
            "article_versions": _deleted(con, "DELETE FROM article_versions WHERE article_id IN "
                                              "(SELECT article_id FROM forgotten_ids)"),
            "revisits": _deleted(con, "DELETE FROM revisits WHERE article_id IN (SELECT article_id FROM forgotten_ids)"),
            "fetches": _deleted(con, "DELETE FROM fetches WHERE rowid IN (SELECT row FROM fetch_rows)"),
            "articles": _deleted(con, "DELETE FROM articles WHERE article_id IN (SELECT article_id FROM forgotten_ids)"),
        }
        if con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'site_boilerplate'").fetchall():
            removed["site_boilerplate"] = _deleted(
                con, "DELETE FROM site_boilerplate s WHERE EXISTS (SELECT 1 FROM forgotten r WHERE "
                     + _DOMAIN_RULE.format("s.domain") + ")")
        if removed["articles"]:
            rebuild_clusters(con)  # a forgotten article may have been a cluster's first or its bridge
            # The index still holds the removed texts' words, even those of a stale article's first
            # version: the next `refresh_search` (flows/forget.py runs it) rebuilds it, whatever waits.
            con.execute(SEARCH_STATE)  # a database older than it
            con.execute("DELETE FROM search_stale WHERE article_id IN (SELECT article_id FROM forgotten_ids)")
            con.execute("DELETE FROM search_index_state")
        con.execute("DROP TABLE forgotten_ids")
        con.unregister("fetch_rows")
    return removed


def _covered_articles(con: duckdb.DuckDBPyConnection) -> int:
    """Fill the temporary table `forgotten_ids` with the articles the rules cover; how many."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE forgotten_ids AS
        SELECT DISTINCT article_id FROM (
            SELECT a.article_id FROM articles a JOIN forgotten r ON {_DOMAIN_RULE.format("a.domain")}
            UNION ALL
            SELECT a.article_id FROM articles a JOIN forgotten r ON r.kind = 'url' AND a.canonical_url = r.value
            UNION ALL
            SELECT u.article_id FROM url_aliases u JOIN forgotten r ON r.kind = 'url' AND u.url = r.value)""")
    return con.execute("SELECT count(*) FROM forgotten_ids").fetchone()[0]


def _covered_fetches(con: duckdb.DuckDBPyConnection, forgotten: Forgotten,
                     articles: int) -> list[tuple[int, str, str | None]]:
    """(rowid, url, final_url) of the fetch log rows the rules cover: those of covered articles,
    and URLs that never became one (failed, skipped...) on a forgotten domain or URL. SQL narrows
    them by host; `Forgotten.covers` (canonical URLs, as everywhere else) decides."""
    hosts = sorted(forgotten.domains | {h for u in forgotten.urls if (h := domain_of(u))})
    staged_hosts = pa.table({"host": pa.array(hosts, pa.string())})  # noqa: F841
    rows = con.execute(
        f"""SELECT f.rowid, f.url, f.final_url, f.article_id IN (SELECT article_id FROM forgotten_ids) AS of_article
            FROM fetches f
            WHERE f.article_id IN (SELECT article_id FROM forgotten_ids)
               OR EXISTS (SELECT 1 FROM staged_hosts h WHERE {_HOST.format("f.url")} = h.host
                          OR suffix({_HOST.format("f.url")}, '.' || h.host)
                          OR {_HOST.format("f.final_url")} = h.host OR suffix({_HOST.format("f.final_url")}, '.' || h.host))"""
    ).fetchall() if (articles or hosts) else []
    return [(row, url, final) for row, url, final, of_article in rows
            if of_article or forgotten.covers(url) or (final and forgotten.covers(final))]


def _deleted(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


# ---------------------------------------------------------------- per-site boilerplate (issue 8)

# The most recent articles of a domain a boilerplate sample reads: enough to see furniture
# repeat, bounded so that a large archive costs the same as a medium one.
BOILERPLATE_SAMPLE = 200

BOILERPLATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS site_boilerplate (  -- lines a site repeats across its articles (tasks/boilerplate.py)
    domain     VARCHAR NOT NULL,
    line_key   VARCHAR NOT NULL,
    learned_at TIMESTAMPTZ,
    PRIMARY KEY (domain, line_key)
);
"""
SCHEMA += BOILERPLATE_SCHEMA + SEARCH_STATE


def site_boilerplate(db: Path | str, domains: Sequence[str]) -> dict[str, frozenset[str]]:
    """Per domain, the `line_key`s learned as its furniture (`learn_site_boilerplate`).
    Read-write although it only reads: see `known_urls`."""
    wanted = sorted({d for d in domains if d})
    if not wanted or not Path(db).exists():
        return {}
    with connect(db) as con:
        return _site_boilerplate(con, wanted)


def _site_boilerplate(con: duckdb.DuckDBPyConnection, domains: list[str]) -> dict[str, frozenset[str]]:
    if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'site_boilerplate'").fetchall():
        return {}
    staged = pa.table({"domain": pa.array(domains, pa.string())})  # noqa: F841
    rows = con.execute("SELECT domain, list(line_key) FROM site_boilerplate JOIN staged USING (domain) "
                       "GROUP BY domain").fetchall()
    return {domain: frozenset(keys) for domain, keys in rows}


def learn_site_boilerplate(db: Path | str, domains: Sequence[str] | None = None,
                           sample: int = BOILERPLATE_SAMPLE) -> int:
    """Learn the short lines each domain's stored articles keep repeating (all domains: None);
    returns how many lines are new.

    Runs once a run has loaded, never between its batches: every batch of a run then sees the
    same learned lines, so the batches can run in any order or on other machines, and a rerun
    after a crash extracts exactly what the interrupted run would have. Learned lines are kept
    when later samples no longer show them: the articles extracted since have them removed.
    """
    if domains is not None and not domains:
        return 0
    with transaction(db) as con:
        con.execute(BOILERPLATE_SCHEMA)
        return _learn_boilerplate(con, None if domains is None else sorted(set(domains)), sample)


def _learn_boilerplate(con: duckdb.DuckDBPyConnection, domains: list[str] | None, sample: int) -> int:
    staged = pa.table({"domain": pa.array(domains or [], pa.string())})  # noqa: F841
    chosen = "" if domains is None else "JOIN staged USING (domain)"
    # Counted in SQL (vectorised, on every core): tokenising 200 articles a domain in Python cost
    # ~3 ms a page in the loading process (bench/throughput.py profile). The sample is chosen
    # before any text is read: a window over the texts of every stored article needed memory
    # in proportion to the archive (50k articles: out of memory at a 128MB limit).
    rows = con.execute(
        f"""
        WITH picked AS (
            SELECT a.article_id FROM articles a {chosen}
            WHERE a.text IS NOT NULL AND a.domain IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY a.domain ORDER BY a.fetched_at DESC) <= $sample),
        sample AS (SELECT a.domain, a.article_id, a.text FROM articles a SEMI JOIN picked USING (article_id)),
        totals AS (SELECT domain, count(*) AS total FROM sample GROUP BY domain),
        -- unnest in the select list: as a lateral join it carried each text along with every
        -- one of its lines (out of memory at 128MB on a 4,000-text sample)
        split AS (SELECT domain, article_id, unnest(string_split(text, chr(10))) AS line FROM sample),
        lines AS (
            SELECT DISTINCT domain, article_id, lower(trim(regexp_replace(line, '\\s+', ' ', 'g'))) AS line
            FROM split WHERE trim(line) <> '')
        SELECT l.domain, l.line FROM lines l JOIN totals USING (domain)
        GROUP BY l.domain, l.line, totals.total
        HAVING count(*) >= greatest($min_articles, $min_share * totals.total)
        """, {"sample": sample, "min_articles": MIN_ARTICLES, "min_share": MIN_SHARE}).fetchall()
    learned = sorted({(domain, line_key(line)) for domain, line in rows if len(tokens(line)) <= MAX_WORDS})
    if not learned:
        return 0
    found = pa.table({"domain": [d for d, _ in learned], "line_key": [k for _, k in learned]})  # noqa: F841
    (added,) = con.execute(
        "INSERT INTO site_boilerplate SELECT domain, line_key, ? FROM found ON CONFLICT DO NOTHING",
        [datetime.now(UTC)]).fetchone()
    return int(added)


# ---------------------------------------------------------------- runs and sources


def start_run(db: Path | str, run_id: str, flow: str, parameters: dict[str, Any]) -> None:
    with transaction(db) as con:
        create_schema(con)
        con.execute(VIEWS)
        con.execute(
            "INSERT INTO runs (run_id, flow, started_at, status, parameters) VALUES (?, ?, ?, 'running', ?) "
            "ON CONFLICT (run_id) DO NOTHING",
            [run_id, flow, datetime.now(UTC), json.dumps(parameters, default=str)],
        )


def finish_run(db: Path | str, run_id: str, discovered: int, status: str = "completed") -> None:
    """Close a run, with its counts taken from what `fetches` recorded for it, and learn the
    furniture of the sites it loaded articles of (used by the next runs). A revisit run records
    no fetches (its outcomes are in `revisits`): its counts stay NULL, not 0."""
    counts = ", ".join(f"{s} = CASE WHEN flow = 'revisit' THEN NULL ELSE "
                       f"(SELECT count(*) FROM fetches WHERE run_id = $run AND state = '{s}') END" for s in STATES)
    with transaction(db) as con:
        con.execute(
            f"UPDATE runs SET finished_at = $now, status = $status, discovered = $discovered, {counts} "
            "WHERE run_id = $run",
            {"run": run_id, "now": datetime.now(UTC), "status": status, "discovered": discovered},
        )
        domains = [d for (d,) in con.execute(
            "SELECT DISTINCT a.domain FROM fetches f JOIN articles a USING (article_id) "
            "WHERE f.run_id = ? AND f.state = 'loaded' AND a.domain IS NOT NULL", [run_id]).fetchall()]
        if domains:
            _learn_boilerplate(con, domains, BOILERPLATE_SAMPLE)
    with connect(db) as con:
        con.execute("CHECKPOINT")  # the run's writes into the file, even while `held`: readers need not replay the log


def run_summary(db: Path | str, run_id: str) -> list[dict[str, Any]]:
    """Per source: discovered and the count of each state, plus the top reasons, for one run."""
    pivots = ", ".join(f"count(*) FILTER (WHERE state = '{s}') AS {s}" for s in STATES)
    with connect(db, read_only=True) as con:
        rows = con.execute(
            f"SELECT source, count(*) AS discovered, {pivots} FROM fetches WHERE run_id = ? "
            "GROUP BY source ORDER BY source",
            [run_id],
        ).fetchall()
        columns = ["source", "discovered", *STATES]
        summary = [dict(zip(columns, row, strict=True)) for row in rows]
        reasons = con.execute(
            "SELECT source, state || ':' || reason AS why, count(*) AS n FROM fetches "
            "WHERE run_id = ? AND reason IS NOT NULL GROUP BY ALL ORDER BY n DESC, why",
            [run_id],
        ).fetchall()
    for entry in summary:
        entry["top_reasons"] = [f"{why} ({n})" for src, why, n in reasons if src == entry["source"]][:3]
    return summary


def silent_sources(db: Path | str) -> dict[str, tuple[timedelta, timedelta]]:
    """The feeds and sitemaps gone silent (`source_health.silent`, rule in tasks/views.py): per
    name, how long before its last check its newest article came, and its longest gap in the
    four weeks before."""
    with connect(db, read_only=True) as con:
        rows = con.execute("SELECT source, quiet_for, longest_gap FROM source_health WHERE silent").fetchall()
    return {name: (quiet, gap) for name, quiet, gap in rows}


def source_states(db: Path | str) -> dict[str, dict[str, Any]]:
    """Per source name: the stored feed validators and body hash (for conditional GETs)."""
    if not Path(db).exists():
        return {}
    with connect(db, read_only=True) as con:
        cur = con.execute("SELECT name, etag, last_modified, body_hash FROM sources")
        return {name: {"etag": e, "last_modified": lm, "body_hash": h} for name, e, lm, h in cur.fetchall()}


def save_source_states(db: Path | str, states: Sequence[dict[str, Any]]) -> None:
    """Upsert per-source state after discovery (validators, body hash, last status or error)."""
    if not states:
        return
    columns = ["name", "kind", "location", "etag", "last_modified", "body_hash",
               "last_checked_at", "last_changed_at", "last_status", "last_error"]
    staged = pa.Table.from_pylist(  # noqa: F841
        [{c: s.get(c) for c in columns} for s in states],
        schema=pa.schema([(c, pa.timestamp("us", tz="UTC") if c.endswith("_at") else pa.string())
                          for c in columns]),
    )
    with transaction(db) as con:
        con.execute(
            "INSERT INTO sources SELECT * FROM staged ON CONFLICT (name) DO UPDATE SET "
            "kind = excluded.kind, location = excluded.location, "
            "etag = coalesce(excluded.etag, sources.etag), "
            "last_modified = coalesce(excluded.last_modified, sources.last_modified), "
            "body_hash = coalesce(excluded.body_hash, sources.body_hash), "
            "last_checked_at = excluded.last_checked_at, "
            "last_changed_at = coalesce(excluded.last_changed_at, sources.last_changed_at), "
            "last_status = excluded.last_status, last_error = excluded.last_error"
        )


def clusters(db: Path | str, since: datetime | None = None, min_size: int = 2,
             limit: int = 20) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The largest clusters first (then the most recent): who ran a story, and who ran it first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a day given on the command line means UTC
    with connect(db, read_only=True) as con:
        cur = con.execute(
            "SELECT size, outlets, first_outlet, first_published, last_published, title, cluster_id "
            "FROM clusters WHERE size >= $min_size AND ($since IS NULL OR last_published >= $since) "
            "ORDER BY size DESC, outlets DESC, first_published DESC NULLS LAST LIMIT $limit",
            {"min_size": min_size, "since": since, "limit": limit})
        return [d[0] for d in cur.description], cur.fetchall()


def query(db: Path | str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a read-only query for people: column names and rows."""
    with connect(db, read_only=True) as con:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description or []]
        return columns, cur.fetchall()


# ---------------------------------------------------------------- the operator's view (SQL in tasks/views.py)


def refresh_search(db: Path | str) -> int:
    """Rebuild the BM25 index over articles' titles and texts when it is missing, when an indexed
    article changed, or when more than `search_unindexed_max` articles were loaded since it was
    built; returns how many articles a search covers (in the index or scored on the fly).

    DuckDB's fts index is a snapshot with no incremental update; a search scores the articles it
    lacks itself (tasks/views.py), so the flow calls this once per run, after its loads. The index
    and the fingerprint of what it covers change in one transaction. Raises
    `tasks.views.SearchUnavailableError` without the extension."""
    settings = Settings()
    with transaction(db) as con:
        con.execute(SEARCH_STATE)  # a database an older newsflow indexed
        if con.execute(INDEX_EXISTS).fetchone()[0]:
            indexed, fingerprint = con.execute(INDEXED_FINGERPRINT).fetchone()
            built = con.execute("SELECT articles, fingerprint FROM search_index_state").fetchone()
            waiting = con.execute(UNINDEXED_COUNT).fetchone()[0]
            if built == (indexed, fingerprint) and waiting <= settings.search_unindexed_max:
                return int(indexed + waiting)
        load_fts(con)
        con.execute("SET memory_limit = ?", [settings.duckdb_search_memory_limit])  # it spills instead
        try:
            con.execute(CREATE_INDEX)
        finally:
            con.execute("SET memory_limit = ?", [writer_memory_limit(settings)])
        con.execute("DELETE FROM search_stale")  # the new index holds every article as it is now
        indexed, fingerprint = con.execute(INDEXED_FINGERPRINT).fetchone()
        con.execute("DELETE FROM search_index_state")
        con.execute("INSERT INTO search_index_state VALUES (?, ?, now())", [indexed, fingerprint])
        return int(indexed + con.execute(UNINDEXED_COUNT).fetchone()[0])


def refresh_search_if_available(db: Path | str) -> int | None:
    """`refresh_search`, logging instead of failing the run where the fts extension is not installed."""
    try:
        return refresh_search(db)
    except SearchUnavailableError as exc:
        log.warning("search index not refreshed: %s", exc)
        return None


def has_search_index(db: Path | str, wait: float | None = None) -> bool:
    with connect(db, read_only=True, wait=wait) as con:
        return bool(con.execute(INDEX_EXISTS).fetchone()[0])


def stats(db: Path | str, since: str | None = None,
          wait: float | None = None) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The `source_health` and `daily_articles` views, from `since` (a date) on, and
    `source_revisions` where articles were revisited: name -> (columns, rows)."""
    out = {}
    with connect(db, read_only=True, wait=wait) as con:
        for view in ("source_health", "daily_articles", "source_revisions"):
            try:
                cur = con.execute(f"SELECT * FROM {view}(?)", [since or "1970-01-01"])
            except duckdb.CatalogException:  # a database last written by a newsflow without the view
                continue
            out[view] = ([d[0] for d in cur.description or []], cur.fetchall())
    if not out.get("source_revisions", ([], [None]))[1]:
        out.pop("source_revisions", None)  # no revisits: no table to print
    return out


def search(db: Path | str, text: str, since: str | None = None, source: str | None = None,
           limit: int = 10, wait: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Articles matching `text`, best BM25 score first (source matches a source name or a domain)."""
    with connect(db, read_only=True, wait=wait) as con:
        load_fts(con)
        if not con.execute(STALE_EXISTS).fetchone()[0]:  # a database last written by an older newsflow
            con.execute("CREATE TEMP TABLE IF NOT EXISTS search_stale (article_id VARCHAR)")
        con.execute("BEGIN TRANSACTION")  # the rowids looked up first and the search: one snapshot
        try:
            filters = {"since": since, "source": source}
            first, last = con.execute(UNINDEXED_SPAN, filters).fetchone()
            cur = con.execute(SEARCH, {**filters, "query": text, "limit": limit,
                                       "first": 0 if first is None else first, "last": -1 if last is None else last})
            return [d[0] for d in cur.description or []], cur.fetchall()
        finally:
            con.execute("ROLLBACK")


def export_parquet(db: Path | str, out_dir: Path | str, since: str | None = None,
                   wait: float | None = None) -> int:
    """Write articles as Parquet under `out_dir/date=YYYY-MM-DD/`; returns how many rows."""
    with connect(db, read_only=True, wait=wait) as con:
        (count,) = con.execute(export_sql(Path(out_dir)), {"since": since or "1970-01-01"}).fetchone()
        return int(count)


def retry_candidates(db: Path | str | None, settings: Settings) -> list[Article]:
    """URLs whose last recorded state, over all runs, was a transient failure (`--retry-failed`).

    Transient: tasks.fetch.TRANSIENT_REASONS (timeouts, connect errors, 429/5xx, deadline,
    robots-unavailable...). Read-only; `db` defaults to `settings.db`. Hints are not stored, so
    the records carry the URL, its source and the source's kind only.
    """
    from tasks.fetch import TRANSIENT_REASONS  # the reason vocabulary lives with the fetcher

    db = Path(db) if db else settings.db
    if not db.exists():
        return []
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "WITH last AS (SELECT url, arg_max(source, recorded_at) AS source, "
            "arg_max(state, recorded_at) AS state, arg_max(reason, recorded_at) AS reason "
            "FROM fetches GROUP BY url) "
            "SELECT last.url, last.source, s.kind FROM last LEFT JOIN sources s ON s.name = last.source "
            "WHERE last.state = 'failed' AND list_contains(?, last.reason) ORDER BY last.url",
            [sorted(TRANSIENT_REASONS)],
        ).fetchall()
    return [Article(url=url, source=source or "retry", source_kind=_source_kind(kind))
            for url, source, kind in rows]


_SOURCE_KINDS = frozenset(k.value for k in SourceKind)


def _source_kind(value: str | None) -> SourceKind:
    """A stored source kind as the enum; a URL list where it is unknown (a source no longer configured)."""
    return SourceKind(value) if value in _SOURCE_KINDS else SourceKind.URLS


# ---------------------------------------------------------------- Prefect tasks (thin wrappers)
from prefect import task  # noqa: E402  (kept at the bottom: the logic above needs no Prefect)
from prefect.cache_policies import NONE  # noqa: E402

start_run_task = task(name="start-run", cache_policy=NONE)(start_run)
revisit_candidates_task = task(name="revisit-candidates", cache_policy=NONE)(revisit_candidates)
record_revisits_task = task(name="revisit-load", cache_policy=NONE, retries=1, retry_delay_seconds=5)(record_revisits)
finish_run_task = task(name="finish-run", cache_policy=NONE)(finish_run)
learn_boilerplate_task = task(name="learn-boilerplate", cache_policy=NONE)(learn_site_boilerplate)
recluster_task = task(name="recluster", cache_policy=NONE)(recluster)
save_source_states_task = task(name="save-source-states", cache_policy=NONE)(save_source_states)
refresh_search_task = task(name="refresh-search", cache_policy=NONE)(refresh_search_if_available)
