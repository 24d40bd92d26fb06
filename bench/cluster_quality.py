"""Quality of near-duplicate clustering: the labelled evaluation set and a synthetic Jaccard sweep.

    uv run python bench/cluster_quality.py [--trials 2000]

1. Loads tests/fixtures/clusters/eval.json through the real store (in-memory DuckDB,
   `add_signatures` in batches) and reports pairwise precision/recall against the labels,
   the true 5-shingle Jaccard of every pair, the lowest Jaccard of a clustered pair and the
   highest of a pair left apart, and whether the 0.6 / 0.2 rule holds.
2. Shows the analytic miss / false-match probabilities of a few (bands, rows, threshold)
   choices: where the constants in tasks/similarity.py came from.
3. Sweeps synthetic pairs of 400-shingle sets at controlled Jaccard 0.1 ... 0.9 and reports
   the empirical probability that a pair is a candidate and verifies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from scipy.stats import binom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks import similarity as sim  # noqa: E402
from tasks.cluster_store import CLUSTER_SCHEMA, SignedArticle, add_signatures  # noqa: E402

EVAL = ROOT / "tests" / "fixtures" / "clusters" / "eval.json"


def cluster_eval_set(texts: list[dict], batch: int = 7) -> dict[str, str]:
    """article id -> cluster id, clustering the set through the DuckDB store in batches."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE articles (article_id VARCHAR PRIMARY KEY, published_at TIMESTAMPTZ, "
                "fetched_at TIMESTAMPTZ, cluster_id VARCHAR)")
    con.execute(CLUSTER_SCHEMA)
    sigs = sim.signatures(t["text"] for t in texts)
    rows = [SignedArticle(t["id"], datetime.fromisoformat(t["published_at"]),
                          datetime.fromisoformat(t["published_at"]), s) for t, s in zip(texts, sigs)]
    for lo in range(0, len(rows), batch):
        part = rows[lo:lo + batch]
        staged = pa.table({"article_id": [r.article_id for r in part],  # noqa: F841
                           "ts": pa.array([r.published_at for r in part], pa.timestamp("us", tz="UTC"))})
        con.execute("INSERT INTO articles SELECT article_id, ts, ts, article_id FROM staged")
        add_signatures(con, part)
    return dict(con.execute("SELECT article_id, cluster_id FROM articles").fetchall())


def pair_table(texts: list[dict], cluster: dict[str, str]) -> list[dict]:
    """One row per pair: true Jaccard, labelled copy?, clustered?, same event?"""
    out = []
    for a, b in itertools.combinations(texts, 2):
        out.append({"a": a["id"], "b": b["id"], "jaccard": sim.jaccard(a["text"], b["text"]),
                    "copy": a["story"] == b["story"], "clustered": cluster[a["id"]] == cluster[b["id"]],
                    "same_event": a.get("event") is not None and a.get("event") == b.get("event")})
    return out


def summary(pairs: list[dict]) -> dict[str, float | bool | int]:
    tp = sum(p["copy"] and p["clustered"] for p in pairs)
    clustered = [p["jaccard"] for p in pairs if p["clustered"]]
    apart = [p["jaccard"] for p in pairs if not p["clustered"]]
    return {
        "pairs": len(pairs), "labelled_copy_pairs": sum(p["copy"] for p in pairs),
        "precision": tp / max(1, sum(p["clustered"] for p in pairs)),
        "recall": tp / max(1, sum(p["copy"] for p in pairs)),
        "min_jaccard_clustered": min(clustered, default=float("nan")),
        "max_jaccard_not_clustered": max(apart, default=float("nan")),
        "min_jaccard_labelled_copy": min(p["jaccard"] for p in pairs if p["copy"]),
        "max_jaccard_same_event_reports": max((p["jaccard"] for p in pairs if p["same_event"]), default=0.0),
        "max_jaccard_unrelated": max(p["jaccard"] for p in pairs if not p["copy"]),
        "all_ge_0.6_clustered": all(p["clustered"] for p in pairs if p["jaccard"] >= 0.6),
        "none_lt_0.2_clustered": not any(p["clustered"] for p in pairs if p["jaccard"] < 0.2),
    }


def analytic(s: float, bands: int, rows: int, threshold: float, perms: int = sim.NUM_PERM,
             shared: int = sim.MIN_SHARED_BANDS) -> float:
    """P(candidate and verified) at true Jaccard s, treating bands and estimate as independent."""
    cand = binom.sf(shared - 1, bands, s**rows)  # at least `shared` of the bands equal
    verify = binom.sf(np.ceil(threshold * perms) - 1, perms, s)
    return cand * verify


def sweep(trials: int, size: int = 400) -> list[tuple[float, float, float, float]]:
    """(J, empirical P(candidate), empirical P(clustered), analytic P) for synthetic set pairs."""
    rng = np.random.default_rng(7)
    out = []
    for j in np.round(np.arange(0.1, 0.95, 0.1), 2):
        shared = round(2 * size * j / (1 + j))  # |A|=|B|=size, |A&B|=shared -> J = shared/(2 size - shared)
        cand = match = 0
        for _ in range(trials):
            u = rng.choice(2**32, 2 * size - shared, replace=False).astype(np.uint32)
            a = sim.signature_of_hashes(u[:size])
            b = sim.signature_of_hashes(u[size - shared:])
            c = bool(sim.shares_bands(a, b)[0])
            cand += c
            match += c and bool(sim.is_match(a, b)[0])
        real_j = shared / (2 * size - shared)
        out.append((real_j, cand / trials, match / trials,
                    analytic(real_j, sim.BANDS, sim.ROWS, sim.MATCH_THRESHOLD)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=2000, help="synthetic pairs per Jaccard level")
    a = p.parse_args()
    texts = json.loads(EVAL.read_text())["texts"]
    pairs = pair_table(texts, cluster_eval_set(texts))
    print("== evaluation set:", len(texts), "texts")
    for k, v in summary(pairs).items():
        print(f"  {k:32s} {v:.3f}" if isinstance(v, float) else f"  {k:32s} {v}")
    wrong = [p for p in pairs if p["copy"] != p["clustered"]]
    for w in wrong:
        print("  WRONG", w)
    print("\n== analytic P(clustered) per (bands x rows, threshold), num_perm", sim.NUM_PERM)
    print("  bands rows shared  thr   P(miss|0.6)   P(miss|0.5)   P(match|0.2)  P(match|0.05)")
    for bands, rows, shared, thr in [(32, 4, 1, 0.4), (42, 3, 1, 0.3), (42, 3, 1, 0.4), (42, 3, 2, 0.4),
                                     (42, 3, 1, 0.5), (64, 2, 1, 0.4), (64, 2, 3, 0.4), (25, 5, 1, 0.4)]:
        print(f"  {bands:5d} {rows:4d} {shared:6d} {thr:4.2f}   {1 - analytic(0.6, bands, rows, thr, shared=shared):.2e}"
              f"      {1 - analytic(0.5, bands, rows, thr, shared=shared):.2e}"
              f"      {analytic(0.2, bands, rows, thr, shared=shared):.2e}"
              f"     {analytic(0.05, bands, rows, thr, shared=shared):.2e}")
    print(f"\n== synthetic sweep ({a.trials} pairs per level; chosen: {sim.BANDS}x{sim.ROWS}, "
          f"{sim.MIN_SHARED_BANDS} shared, threshold {sim.MATCH_THRESHOLD})")
    print("  jaccard  P(candidate)  P(clustered)  analytic")
    for j, c, m, an in sweep(a.trials):
        print(f"  {j:7.3f}  {c:12.4f}  {m:12.4f}  {an:8.2e}")


if __name__ == "__main__":
    main()
