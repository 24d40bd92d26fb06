"""Shingles, MinHash signatures, band keys, and the targets on the labelled evaluation set."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from tasks import similarity as sim
from tasks.cluster_store import CLUSTER_SCHEMA, SignedArticle, add_signatures

EVAL = Path(__file__).parent / "fixtures" / "clusters" / "eval.json"
PROSE = ("The harbour authority said on Tuesday that container traffic had fallen for the third month "
         "in a row as shipping lines moved services to larger ports along the coast, and that it would "
         "ask the government for help to deepen the main channel before the next winter season began.")


def test_tokens_casefold_and_split_on_non_word() -> None:
    assert sim.tokens("Straße, STRASSE! it's 6.8") == ["strasse", "strasse", "it", "s", "6", "8"]


def test_shingle_hashes_are_distinct_stable_and_need_five_words() -> None:
    words = sim.tokens("a b c d e a b c d e")
    h = sim.shingle_hashes(words)
    assert h.dtype == np.uint32 and len(h) == 5  # 6 windows, "a b c d e" twice
    assert np.array_equal(h, sim.shingle_hashes(words))
    assert len(sim.shingle_hashes(["a", "b", "c", "d"])) == 0


def test_signature_is_datasketch_minhash() -> None:
    hashes = sim.shingle_hashes(sim.tokens(PROSE))
    m = MinHash(num_perm=sim.NUM_PERM, seed=sim.SEED, hashfunc=int)
    m.update_batch(hashes)
    assert np.array_equal(sim.signature_of_hashes(hashes), m.hashvalues)


def test_short_texts_get_no_signature() -> None:
    short = " ".join(PROSE.split()[:sim.MIN_WORDS - 1])
    sigs = sim.signatures([PROSE, short, ""])
    assert sigs[0] is not None and sigs[0].shape == (sim.NUM_PERM,) and sigs[0].dtype == np.uint32
    assert sigs[1] is None and sigs[2] is None


def test_band_keys_encode_band_index_and_match_only_equal_bands() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, (1, sim.NUM_PERM), dtype=np.uint32)
    b = a.copy()
    b[0, :sim.ROWS] += 1  # change band 0 only
    ka, kb = sim.band_keys(a)[0], sim.band_keys(b)[0]
    assert ka.dtype == np.uint64 and ka.shape == (sim.BANDS,)
    assert list(ka >> np.uint64(56)) == list(range(sim.BANDS))
    assert ka[0] != kb[0] and np.array_equal(ka[1:], kb[1:])
    # The same values in different bands give different keys.
    same = np.tile(a[0, :sim.ROWS], sim.NUM_PERM // sim.ROWS + 1)[:sim.NUM_PERM]
    assert len(set(sim.band_keys(same[None])[0])) == sim.BANDS


def test_estimated_jaccard_tracks_the_true_jaccard() -> None:
    base = PROSE.split()
    edited = " ".join(base[:30] + ["suddenly", "everything", "changed", "here"] + base[30:])
    true = sim.jaccard(PROSE, edited)
    a, b = sim.signatures([PROSE, edited])
    assert 0.6 < true < 0.9
    assert abs(float(sim.estimated_jaccard(a, b)[0]) - true) < 0.15
    assert sim.estimated_jaccard(a, a)[0] == 1.0
    assert sim.is_match(a, b)[0] and sim.shares_bands(a, b)[0]


@pytest.mark.parametrize(("jaccard", "expect"), [(0.15, False), (0.7, True)])
def test_synthetic_pairs_either_side_of_the_rule(jaccard: float, expect: bool) -> None:
    rng = np.random.default_rng(3)
    size = 400
    shared = round(2 * size * jaccard / (1 + jaccard))
    for _ in range(50):
        u = rng.choice(2**32, 2 * size - shared, replace=False).astype(np.uint32)
        a, b = sim.signature_of_hashes(u[:size]), sim.signature_of_hashes(u[size - shared:])
        assert bool(sim.shares_bands(a, b)[0] and sim.is_match(a, b)[0]) is expect


# ---------------------------------------------------------------- the labelled evaluation set


@pytest.fixture(scope="module")
def eval_pairs() -> list[dict]:
    """Every pair of the set with its true Jaccard, its label and whether the store clustered it."""
    texts = json.loads(EVAL.read_text())["texts"]
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE articles (article_id VARCHAR PRIMARY KEY, published_at TIMESTAMPTZ, "
                "fetched_at TIMESTAMPTZ, cluster_id VARCHAR)")
    con.execute(CLUSTER_SCHEMA)
    rows = [SignedArticle(t["id"], datetime.fromisoformat(t["published_at"]),
                          datetime.fromisoformat(t["published_at"]), s)
            for t, s in zip(texts, sim.signatures(t["text"] for t in texts))]
    staged = pa.table({"article_id": [r.article_id for r in rows],  # noqa: F841
                       "ts": pa.array([r.published_at for r in rows], pa.timestamp("us", tz="UTC"))})
    con.execute("INSERT INTO articles SELECT article_id, ts, ts, article_id FROM staged")
    for lo in range(0, len(rows), 6):  # several batches: cross-batch clustering on the way
        add_signatures(con, rows[lo:lo + 6])
    cluster = dict(con.execute("SELECT article_id, cluster_id FROM articles").fetchall())
    return [{"jaccard": sim.jaccard(a["text"], b["text"]), "copy": a["story"] == b["story"],
             "clustered": cluster[a["id"]] == cluster[b["id"]],
             "same_event": a.get("event") is not None and a.get("event") == b.get("event")}
            for a, b in itertools.combinations(texts, 2)]


def test_eval_set_has_the_promised_shape() -> None:
    texts = json.loads(EVAL.read_text())["texts"]
    kinds = {k: [t for t in texts if t["kind"] == k] for k in ("wire-copy", "independent-report", "unrelated")}
    stories = {t["story"] for t in kinds["wire-copy"]}
    assert len(stories) >= 6 and all(
        3 <= sum(t["story"] == s for t in texts) <= 5 for s in stories)
    assert len({t["event"] for t in kinds["independent-report"]}) >= 4
    assert len(kinds["unrelated"]) >= 10
    assert all(150 <= len(t["text"].split()) <= 600 for t in texts)


def test_eval_precision_and_recall_are_perfect(eval_pairs: list[dict]) -> None:
    wrong = [p for p in eval_pairs if p["copy"] != p["clustered"]]
    assert wrong == []
    assert sum(p["copy"] for p in eval_pairs) >= 30


def test_eval_jaccard_rule(eval_pairs: list[dict]) -> None:
    assert all(p["clustered"] for p in eval_pairs if p["jaccard"] >= 0.6)
    assert not any(p["clustered"] for p in eval_pairs if p["jaccard"] < 0.2)
    # Independent reports of one event share names and numbers, not 5-word runs.
    assert max(p["jaccard"] for p in eval_pairs if p["same_event"]) < 0.1
    assert not any(p["clustered"] for p in eval_pairs if p["same_event"])
