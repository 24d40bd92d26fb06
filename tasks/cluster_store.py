"""The near-duplicate (syndication) index in DuckDB, and `articles.cluster_id` kept from it.

Every function takes an open connection: `tasks/load.py` calls them inside its write
transaction, so the index spans runs and a rolled-back batch leaves no trace.

    article_signatures  one row per signed article: integer key, id, dates, MinHash (BLOB)
    signature_bands     BANDS rows per signed article: (band_key, sig_key)

Two articles are candidates when they share MIN_SHARED_BANDS band keys (one equality join,
counted per pair) and a match when their signatures verify (`tasks.similarity.is_match`).
Matches are transitive: a cluster is a connected component, and its id is the article_id of
its earliest-published member (unknown dates last; ties by earliest fetched_at, then
article_id), so it is stable when later copies arrive and the right one when a new article
bridges two clusters.

Only candidate rows and members of affected clusters are read into Python, never the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from tasks.similarity import BANDS, MIN_SHARED_BANDS, NUM_PERM, band_keys, is_match

CLUSTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS article_signatures (
    sig_key      INTEGER NOT NULL,        -- surrogate: keeps the band table at 12 bytes a row
    article_id   VARCHAR NOT NULL,        -- unique (kept so by add_signatures; no index: tasks/load.py)
    published_at TIMESTAMPTZ,
    fetched_at   TIMESTAMPTZ,
    signature    BLOB NOT NULL            -- NUM_PERM little-endian uint32 MinHash values
);
CREATE TABLE IF NOT EXISTS signature_bands (
    band_key UBIGINT NOT NULL,            -- band index (top byte) + hash of the band's rows
    sig_key  INTEGER NOT NULL
);
"""
# No index on signature_bands: a hash join of a batch's keys against the table is a scan
# that measured ~1 s at 42M rows, and an ART index over 42M keys would cost more memory
# than the whole scan does.

_TS = pa.timestamp("us", tz="UTC")
VERIFY_CHUNK = 8192  # candidate pairs verified per numpy step (2 x 8192 x 512 B = 8 MB)
# Keys whose candidate pairs one query finds (`_matches`), in a batch's lookup and in a rebuild
# alike: both join `_shared_bands`, the rows of band keys shared at all, and a query's join rows
# grow with its keys times the signatures each of their bands is shared with. At 10,000 keys a
# rebuild of 20,000 articles sharing a band in groups of 500 (5M candidate pairs) fits in 32MB
# (tests/test_cluster_store.py). Batches once looked their keys up 1,000 at a time against the
# whole band table, and a bulk load of 50,000 spent 9 of its 13 s in those 50 queries.
CANDIDATE_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class SignedArticle:
    """What clustering needs of one article; `signature` None means too short to sign."""

    article_id: str
    published_at: datetime | None
    fetched_at: datetime | None
    signature: np.ndarray | None


class _UnionFind:
    """Disjoint sets over hashable items (path halving); a dozen lines no library does lighter."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return list(out.values())


# ---------------------------------------------------------------- storing signatures


def insert_signatures(con: duckdb.DuckDBPyConnection, article_ids: Sequence[str],
                      published_at: pa.Array | Sequence[datetime | None],
                      fetched_at: pa.Array | Sequence[datetime | None],
                      sigs: np.ndarray) -> pa.Table:
    """Store signatures and band keys of articles not stored yet, without clustering them.

    Returns the band rows stored (band_key, sig_key; the new sig_keys are consecutive). For bulk
    backfills: insert, then `rebuild_clusters`. The caller drops ids already stored (see
    `add_signatures`).
    """
    start = con.execute("SELECT coalesce(max(sig_key), 0) + 1 FROM article_signatures").fetchone()[0]
    keys = np.arange(start, start + len(article_ids), dtype=np.int32)
    sigs = np.ascontiguousarray(sigs, dtype="<u4")
    blobs = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4 * NUM_PERM), len(keys), [None, pa.py_buffer(sigs)]).cast(pa.binary())
    staged_sigs = pa.table({  # noqa: F841 (used by name in SQL)
        "sig_key": keys, "article_id": pa.array(article_ids, pa.string()),
        "published_at": pa.array(published_at, _TS), "fetched_at": pa.array(fetched_at, _TS),
        "signature": blobs,
    })
    con.execute("INSERT INTO article_signatures BY NAME SELECT * FROM staged_sigs")
    staged_bands = pa.table({"band_key": band_keys(sigs).ravel(), "sig_key": np.repeat(keys, BANDS)})
    con.execute("INSERT INTO signature_bands SELECT band_key, sig_key FROM staged_bands")
    return staged_bands


def _unstored(con: duckdb.DuckDBPyConnection, rows: Iterable[SignedArticle]) -> list[SignedArticle]:
    """Signed rows whose article is not in the index yet (first of each id): re-adding is a no-op."""
    by_id: dict[str, SignedArticle] = {}
    for r in rows:
        if r.signature is not None:
            by_id.setdefault(r.article_id, r)
    if not by_id:
        return []
    staged = pa.table({"article_id": list(by_id)})  # noqa: F841
    stored = {a for (a,) in con.execute(
        "SELECT article_id FROM article_signatures JOIN staged USING (article_id)").fetchall()}
    return [r for a, r in by_id.items() if a not in stored]


# ---------------------------------------------------------------- candidates and verification


def _signature_rows(found: pa.Table) -> np.ndarray:
    """(rows, NUM_PERM) uint32 view of a fetched `signature` column, without a Python object per row."""
    blobs = found["signature"].combine_chunks()
    if len(blobs) == 0:
        return np.empty((0, NUM_PERM), "<u4")
    width = np.int64 if pa.types.is_large_binary(blobs.type) else np.int32
    offsets = np.frombuffer(blobs.buffers()[1], width)[blobs.offset:blobs.offset + len(blobs) + 1]
    if offsets[-1] - offsets[0] != 4 * NUM_PERM * len(blobs):
        raise ValueError("a stored signature is not NUM_PERM uint32 values")
    data = np.frombuffer(blobs.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    return data.view("<u4").reshape(len(blobs), NUM_PERM)


def _verified(con: duckdb.DuckDBPyConnection, pairs: pa.Table) -> list[tuple[str, str]]:
    """The candidate (sig_key a, sig_key b) pairs whose signatures verify, as article_id pairs.

    Memory is each distinct key's signature once plus VERIFY_CHUNK pairs at a time. Since a
    candidate must share MIN_SHARED_BANDS bands, a batch of 500 has ~1,000 pairs, but a
    re-clustering (`rebuild_clusters`) verifies all candidates of a CANDIDATE_KEYS range in one
    call, and gathering both sides of every pair at once was once the loading process's largest
    allocation (1 KB a pair, with one-band candidates that grew with the archive).
    """
    if pairs.num_rows == 0:
        return []
    a_keys = pairs["a"].to_numpy()
    b_keys = pairs["b"].to_numpy()
    keys = pa.table({"sig_key": np.unique(np.concatenate([a_keys, b_keys]))})  # noqa: F841
    found = con.execute("SELECT s.sig_key, s.article_id, s.signature FROM article_signatures s "
                        "SEMI JOIN keys USING (sig_key) ORDER BY s.sig_key").to_arrow_table()
    order = found["sig_key"].to_numpy()
    ids = found["article_id"].to_pylist()
    sigs = _signature_rows(found)
    out: list[tuple[str, str]] = []
    for lo in range(0, len(a_keys), VERIFY_CHUNK):
        ca = np.searchsorted(order, a_keys[lo:lo + VERIFY_CHUNK])
        cb = np.searchsorted(order, b_keys[lo:lo + VERIFY_CHUNK])
        ok = is_match(sigs[ca], sigs[cb])
        out.extend((ids[i], ids[j]) for i, j in zip(ca[ok], cb[ok]))
    return out


def _share_bands(con: duckdb.DuckDBPyConnection, touched: pa.Table | None = None) -> None:
    """Into the temp table `_shared_bands`, ordered by sig_key: the stored band rows whose band key
    at least one other signature has too (only those can make a pair), of the keys in `touched`
    (a batch's band rows, stored already) or, without it, of the whole archive (a rebuild).

    A batch's lookup is one scan of `signature_bands`, probing the batch's own keys, which come
    from memory: its candidate queries once read the batch's band rows back from the table and
    then joined the table again, two scans of a table that grows with the archive for every
    1,000 new keys."""
    # A batch's rows are held once (MATERIALIZED) and grouped; the whole archive's are scanned
    # twice instead: held, 42M band rows took a rebuild from 2.2 to 3.2 GB (bench/cluster_scale.py).
    rows = ("MATERIALIZED (SELECT band_key, sig_key FROM signature_bands SEMI JOIN (SELECT band_key FROM touched) USING (band_key))"
            if touched is not None else "NOT MATERIALIZED (SELECT band_key, sig_key FROM signature_bands)")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _shared_bands AS
        WITH rows AS {rows}
        SELECT band_key, sig_key FROM rows
        SEMI JOIN (SELECT band_key FROM rows GROUP BY band_key HAVING count(*) > 1) USING (band_key)
        ORDER BY sig_key
    """)


def _candidates(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> pa.Table:
    """Every pair (a, b), a < b, in `_shared_bands` sharing MIN_SHARED_BANDS bands, with
    lo <= b < hi: each pair comes from the range of its larger key, once."""
    # Each pair comes out of the join once per shared band, so count(*) counts the bands.
    return con.execute("""
        SELECT x.sig_key AS a, y.sig_key AS b
        FROM _shared_bands x JOIN _shared_bands y ON x.band_key = y.band_key AND x.sig_key < y.sig_key
        WHERE y.sig_key >= $lo AND y.sig_key < $hi
        GROUP BY ALL HAVING count(*) >= $shared
    """, {"lo": lo, "hi": hi, "shared": MIN_SHARED_BANDS}).to_arrow_table()


def _matches(con: duckdb.DuckDBPyConnection, first: int | None, last: int | None, step: int) -> list[tuple[str, str]]:
    """The verified candidate pairs of `_shared_bands` whose larger key is in first..last, as
    article_id pairs; then `_shared_bands` is dropped. One query per `step` keys: a query's join
    rows grow with its keys times the signatures each of their bands is shared with (a sentence
    many articles carry can put one band key in thousands of them). None: no keys."""
    try:
        return [pair for lo in (range(first, last + 1, step) if first is not None and last is not None else ())
                for pair in _verified(con, _candidates(con, lo, min(lo + step, last + 1)))]
    finally:
        con.execute("DROP TABLE IF EXISTS _shared_bands")


# ---------------------------------------------------------------- cluster ids


def _earliest(con: duckdb.DuckDBPyConnection, groups: list[list[str]]) -> dict[str, str]:
    """article_id -> cluster id (its group's earliest member) for every member of `groups`."""
    members = [a for g in groups for a in g]
    staged = pa.table({"article_id": members,  # noqa: F841
                       "grp": pa.array(np.repeat(np.arange(len(groups)), [len(g) for g in groups]))})
    rows = con.execute("""
        SELECT st.article_id, first(st.article_id ORDER BY s.published_at ASC NULLS LAST,
               s.fetched_at ASC NULLS LAST, st.article_id) OVER (PARTITION BY st.grp)
        FROM staged st LEFT JOIN article_signatures s USING (article_id)
    """).fetchall()
    return dict(rows)


def _write_cluster_ids(con: duckdb.DuckDBPyConnection, assigned: dict[str, str]) -> int:
    """Set articles.cluster_id where it differs; returns how many rows changed."""
    if not assigned:
        return 0
    staged = pa.table({"article_id": list(assigned), "cluster_id": list(assigned.values())})  # noqa: F841
    return con.execute(
        "UPDATE articles SET cluster_id = staged.cluster_id FROM staged "
        "WHERE articles.article_id = staged.article_id "
        "AND articles.cluster_id IS DISTINCT FROM staged.cluster_id").fetchone()[0]


def _cluster_members(con: duckdb.DuckDBPyConnection, ids: set[str]) -> list[tuple[str, str]]:
    """(article_id, cluster_id) of every article in the clusters that `ids` belong to."""
    staged = pa.table({"article_id": sorted(ids)})  # noqa: F841
    return con.execute("""
        SELECT a.article_id, a.cluster_id FROM articles a
        WHERE a.cluster_id IN (SELECT x.cluster_id FROM articles x JOIN staged USING (article_id))
    """).fetchall()


def add_signatures(con: duckdb.DuckDBPyConnection, rows: Iterable[SignedArticle]) -> int:
    """Index a batch's signatures and re-cluster every cluster they touch.

    Candidates come from the band keys the batch shares with stored signatures and with each
    other (`_share_bands`), are verified on their signatures, and are unioned with the existing
    clusters of the stored side. Rows without a signature, or already indexed, are skipped.
    Returns how many articles' cluster_id changed (a new article going from its own id to a
    cluster's counts).
    """
    new = _unstored(con, rows)
    if not new:
        return 0
    bands = insert_signatures(con, [r.article_id for r in new], [r.published_at for r in new],
                              [r.fetched_at for r in new], np.stack([r.signature for r in new]))
    keys = bands["sig_key"]
    _share_bands(con, bands)
    # the new keys are the largest: a pair with a new side has its larger key among them
    pairs = _matches(con, keys[0].as_py(), keys[-1].as_py(), CANDIDATE_KEYS)
    uf = _UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    new_ids = {r.article_id for r in new}
    old = {x for p in pairs for x in p} - new_ids
    for member, cluster in _cluster_members(con, old) if old else []:
        uf.union(member, cluster)
    return _write_cluster_ids(con, _cluster_ids(con, uf.groups(), new_ids))


def _cluster_ids(con: duckdb.DuckDBPyConnection, groups: list[list[str]], alone: Iterable[str] = ()) -> dict[str, str]:
    """article_id -> cluster id for the members of `groups` (their earliest member) and for the
    articles in `alone` that are in none (themselves)."""
    assigned = {a: a for a in alone}
    if groups:
        assigned.update(_earliest(con, groups))
    return assigned


def rebuild_clusters(con: duckdb.DuckDBPyConnection) -> int:
    """Recompute every signed article's cluster_id from the stored signatures alone.

    Returns how many cluster_ids changed. Articles with a signature but no match become
    their own cluster; articles without a signature are left as they are.
    """
    # The whole archive's pairs in one query ran out of memory where the batches' lookups did not
    # (20,000 articles sharing bands in groups of 500 under a 32MB limit): one query per range of
    # CANDIDATE_KEYS keys (`_matches`).
    _share_bands(con)
    first, last = con.execute("SELECT min(sig_key), max(sig_key) FROM _shared_bands").fetchone()
    pairs = _matches(con, first, last, CANDIDATE_KEYS)
    uf = _UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    changed = _write_cluster_ids(con, _earliest(con, uf.groups()))
    # Everyone else who is signed is a singleton, whatever an older index said.
    clustered = pa.table({"article_id": list(uf.parent)})  # noqa: F841
    changed += con.execute("""
        UPDATE articles SET cluster_id = article_id
        WHERE cluster_id IS DISTINCT FROM article_id
          AND article_id IN (SELECT article_id FROM article_signatures)
          AND article_id NOT IN (SELECT article_id FROM clustered)
    """).fetchone()[0]
    return changed
