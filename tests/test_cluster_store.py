"""The DuckDB near-duplicate index: merges, stability, ties, idempotence, rebuild == incremental."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tasks.cluster_store import CLUSTER_SCHEMA, SignedArticle, add_signatures, rebuild_clusters
from tasks.similarity import NUM_PERM

T0 = datetime(2024, 10, 1, 8, 0, tzinfo=UTC)
ARTICLES = """CREATE TABLE articles (article_id VARCHAR PRIMARY KEY, domain VARCHAR, title VARCHAR,
    published_at TIMESTAMPTZ, fetched_at TIMESTAMPTZ, cluster_id VARCHAR)"""


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect(":memory:")
    c.execute(ARTICLES)
    c.execute(CLUSTER_SCHEMA)
    return c


def rand_sig(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, NUM_PERM, dtype=np.uint32)


def mix(a: np.ndarray, b: np.ndarray, take_from_a: np.ndarray) -> np.ndarray:
    """A signature equal to `a` where the mask is set and to `b` elsewhere."""
    return np.where(take_from_a, a, b)


def article(aid: str, sig: np.ndarray | None, hours: float, fetched_hours: float | None = None) -> SignedArticle:
    fetched = T0 + timedelta(hours=hours if fetched_hours is None else fetched_hours)
    return SignedArticle(aid, T0 + timedelta(hours=hours), fetched, sig)


def load(con: duckdb.DuckDBPyConnection, rows: list[SignedArticle]) -> int:
    """What load.py does: insert the articles (cluster_id = itself), then cluster them."""
    staged = pa.table({"article_id": [r.article_id for r in rows],  # noqa: F841
                       "published_at": pa.array([r.published_at for r in rows], pa.timestamp("us", tz="UTC")),
                       "fetched_at": pa.array([r.fetched_at for r in rows], pa.timestamp("us", tz="UTC"))})
    con.execute("INSERT INTO articles SELECT article_id, 'x.org', 't', published_at, fetched_at, article_id "
                "FROM staged ON CONFLICT DO NOTHING")
    return add_signatures(con, rows)


def clusters(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("SELECT article_id, cluster_id FROM articles ORDER BY article_id").fetchall())


def test_copies_in_one_batch_cluster_under_the_earliest(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(1)
    rows = [article("late", a, 5), article("early", a, 1), article("other", rand_sig(2), 0)]
    assert load(con, rows) == 1  # only "late" moves off its own id
    assert clusters(con) == {"early": "early", "late": "early", "other": "other"}


def test_cross_batch_and_stability(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(1)
    rng = np.random.default_rng(0)
    load(con, [article("first", a, 0)])
    load(con, [article("second", mix(a, rand_sig(3), rng.random(NUM_PERM) < 0.8), 2)])
    assert clusters(con)["second"] == "first"
    # A later copy joins the existing cluster; nobody's id changes but its own.
    assert load(con, [article("third", mix(a, rand_sig(4), rng.random(NUM_PERM) < 0.8), 3)]) == 1
    assert set(clusters(con).values()) == {"first"}


def test_bridge_merges_two_clusters_under_the_earliest(con: duckdb.DuckDBPyConnection) -> None:
    a, b = rand_sig(10), rand_sig(11)
    half = np.arange(NUM_PERM) < NUM_PERM // 2
    load(con, [article("a1", a, 1), article("a2", a, 4), article("b1", b, 0), article("b2", b, 6)])
    before = clusters(con)
    assert before["a2"] == "a1" and before["b2"] == "b1" and before["a1"] != before["b1"]
    # C shares half of its values with each side (estimated Jaccard 0.5 to both).
    changed = load(con, [article("c", mix(a, b, half), 9)])
    assert set(clusters(con).values()) == {"b1"}
    assert changed == 3  # a1, a2 and c move to b1


def test_ties_break_by_fetched_at_then_article_id(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(20)
    load(con, [article("zz", a, 1, fetched_hours=1), article("yy", a, 1, fetched_hours=2)])
    assert clusters(con)["yy"] == "zz"  # same published_at: earlier fetch wins over the smaller id
    load(con, [article("aa", a, 1, fetched_hours=1)])
    assert set(clusters(con).values()) == {"aa"}  # full tie: smallest article_id


def test_unknown_published_at_sorts_last(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(21)
    undated = SignedArticle("undated", None, T0, a)
    load(con, [undated, article("dated", a, 50)])
    assert clusters(con)["undated"] == "dated"


def test_readding_is_a_no_op(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(30)
    rows = [article("p", a, 0), article("q", a, 1)]
    load(con, rows)
    n_sigs = con.execute("SELECT count(*) FROM article_signatures").fetchone()[0]
    n_bands = con.execute("SELECT count(*) FROM signature_bands").fetchone()[0]
    assert load(con, rows) == 0
    assert con.execute("SELECT count(*) FROM article_signatures").fetchone()[0] == n_sigs == 2
    assert con.execute("SELECT count(*) FROM signature_bands").fetchone()[0] == n_bands


def test_unsigned_and_dissimilar_articles_stay_alone(con: duckdb.DuckDBPyConnection) -> None:
    a = rand_sig(40)
    rng = np.random.default_rng(1)
    far = mix(a, rand_sig(41), rng.random(NUM_PERM) < 0.2)  # estimated Jaccard ~0.2
    load(con, [article("a", a, 0), article("far", far, 1), SignedArticle("short", T0, T0, None)])
    assert clusters(con) == {"a": "a", "far": "far", "short": "short"}
    assert con.execute("SELECT count(*) FROM article_signatures").fetchone()[0] == 2


@pytest.mark.parametrize("range_keys", [10_000, 13])  # one key range, or 24 of them
def test_rebuild_equals_incremental(con: duckdb.DuckDBPyConnection, range_keys: int,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.cluster_store.CANDIDATE_KEYS", range_keys)
    rng = np.random.default_rng(5)
    roots = [rand_sig(100 + i) for i in range(30)]
    rows = []
    for i in range(300):  # 300 articles, most near-copies of 30 stories, some random
        base = roots[rng.integers(30)] if i % 5 else rand_sig(1000 + i)
        rows.append(article(f"x{i:03d}", mix(base, rand_sig(2000 + i), rng.random(NUM_PERM) < 0.7),
                            float(rng.integers(0, 48))))
    for lo in range(0, 300, 37):
        load(con, rows[lo:lo + 37])
    incremental = clusters(con)
    assert 25 <= len(set(incremental.values())) <= 100
    con.execute("UPDATE articles SET cluster_id = NULL")
    assert rebuild_clusters(con) == 300
    assert clusters(con) == incremental
    assert rebuild_clusters(con) == 0


def test_a_batch_looked_up_in_chunks_finds_each_candidate_pair_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.cluster_store as store

    rng = np.random.default_rng(6)
    roots = [rand_sig(300 + i) for i in range(12)]
    rows = [article(f"y{i:03d}", mix(roots[rng.integers(12)] if i % 4 else rand_sig(3000 + i), rand_sig(4000 + i),
                                     rng.random(NUM_PERM) < 0.7), float(rng.integers(0, 48))) for i in range(150)]
    seen: list[tuple[int, int]] = []
    verified = store._verified

    def spy(con: duckdb.DuckDBPyConnection, pairs: pa.Table) -> list[tuple[str, str]]:
        seen.extend(zip(pairs["a"].to_pylist(), pairs["b"].to_pylist(), strict=True))
        return verified(con, pairs)

    monkeypatch.setattr(store, "_verified", spy)
    results = {}
    for chunk in (10_000, 7):  # one query for the batch, then 22 (pairs across chunks included)
        monkeypatch.setattr(store, "CANDIDATE_KEYS", chunk)
        seen.clear()
        c = duckdb.connect(":memory:")
        c.execute(ARTICLES)
        c.execute(CLUSTER_SCHEMA)
        load(c, rows)
        results[chunk] = (sorted(seen), clusters(c))
    one_query, chunked = results[10_000], results[7]
    assert len(one_query[0]) > 400  # the stories' copies share bands across chunks
    assert chunked[0] == one_query[0]  # each pair once: none missed, none twice
    assert chunked[1] == one_query[1]


def test_rebuild_runs_in_memory_bounded_by_its_key_ranges_not_the_archive(tmp_path) -> None:
    """5M candidate pairs (20,000 articles sharing a band in groups of 500, none a match): in one
    query DuckDB ran out of memory at 32MB; in ranges of keys it does not."""
    from tasks.cluster_store import insert_signatures

    c = duckdb.connect(str(tmp_path / "bands.duckdb"))
    c.execute(ARTICLES)
    c.execute(CLUSTER_SCHEMA)
    n, groups = 20_000, 40
    rng = np.random.default_rng(7)
    sigs = rng.integers(0, 2**32, (n, NUM_PERM), dtype=np.uint32)
    sigs[:, :3] = rng.integers(0, 2**32, (groups, 3), dtype=np.uint32)[np.arange(n) % groups]
    ids = [f"z{i:05d}" for i in range(n)]
    staged = pa.table({"article_id": ids, "cluster_id": ids})  # noqa: F841
    c.execute("INSERT INTO articles (article_id, cluster_id) SELECT article_id, cluster_id FROM staged")
    insert_signatures(c, ids, [T0] * n, [T0] * n, sigs)
    c.execute("SET memory_limit = '32MB'")
    assert rebuild_clusters(c) == 0  # every article stays its own cluster
    assert c.execute("SELECT count(DISTINCT cluster_id) FROM articles").fetchone()[0] == n


def test_candidates_verified_a_few_pairs_at_a_time_give_the_same_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    roots = [rand_sig(500 + i) for i in range(10)]
    rows = [article(f"v{i:03d}", mix(roots[rng.integers(10)] if i % 3 else rand_sig(5000 + i), rand_sig(6000 + i),
                                     rng.random(NUM_PERM) < 0.7), float(rng.integers(0, 48))) for i in range(120)]
    results = {}
    for chunk in (100_000, 3):
        monkeypatch.setattr("tasks.cluster_store.VERIFY_CHUNK", chunk)
        c = duckdb.connect(":memory:")
        c.execute(ARTICLES)
        c.execute(CLUSTER_SCHEMA)
        for lo in range(0, 120, 40):
            load(c, rows[lo:lo + 40])
        results[chunk] = clusters(c)
    assert 5 <= len(set(results[3].values())) <= 60  # the copies did cluster
    assert results[3] == results[100_000]


def test_signature_rows_reads_a_sliced_column_and_refuses_a_wrong_width() -> None:
    from tasks.cluster_store import _signature_rows

    sigs = np.stack([rand_sig(i) for i in range(5)])
    column = pa.array([s.astype("<u4").tobytes() for s in sigs], pa.binary())
    assert np.array_equal(_signature_rows(pa.table({"signature": column}).slice(2)), sigs[2:])
    assert np.array_equal(_signature_rows(pa.table({"signature": column.cast(pa.large_binary())})), sigs)
    with pytest.raises(ValueError, match="NUM_PERM"):
        _signature_rows(pa.table({"signature": pa.array([b"\x00" * 12], pa.binary())}))


@pytest.mark.parametrize(("full_bands", "together"), [(1, False), (2, True)])
def test_a_pair_is_a_candidate_only_when_it_shares_two_bands(con: duckdb.DuckDBPyConnection, full_bands: int,
                                                              together: bool) -> None:
    """Two signatures equal in 87 of 128 values (an estimate of 0.68, a match) but whole in only
    `full_bands` bands: one shared band is what a sentence many articles carry produces by
    chance, so it does not make a candidate; two do."""
    from tasks.similarity import BANDS, MIN_SHARED_BANDS, ROWS

    assert MIN_SHARED_BANDS == 2
    a, b = rand_sig(900), rand_sig(901)
    equal = np.zeros(NUM_PERM, bool)
    for band in range(BANDS):
        rows = slice(band * ROWS, band * ROWS + (ROWS if band < full_bands else ROWS - 1))
        equal[rows] = True
    equal[BANDS * ROWS:] = True
    load(con, [article("p0", a, 0), article("p1", mix(a, b, equal), 1)])
    assert (clusters(con)["p1"] == "p0") is together
