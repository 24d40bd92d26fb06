"""Scale of the near-duplicate index: add a 10k batch to 1M stored signatures, and rebuild all.

    uv run python bench/cluster_scale.py --base /tmp/clusters-1m.duckdb            # 1,000,000
    uv run python bench/cluster_scale.py --base /tmp/clusters-100k.duckdb --n 100000

The base (random signatures, 2% of them planted near-copies, cluster ids from one
`rebuild_clusters`) is built once and reused; each run copies it and times on the copy.
Every phase runs in its own subprocess so its peak RSS (ru_maxrss) is its own.
Targets on the 2-core dev machine: add 10k < 10 s, peak RSS < 2 GB, rebuild < 300 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.cluster_store import CLUSTER_SCHEMA, SignedArticle, add_signatures, insert_signatures, rebuild_clusters  # noqa: E402
from tasks.similarity import NUM_PERM  # noqa: E402

ARTICLES = """CREATE TABLE IF NOT EXISTS articles (article_id VARCHAR PRIMARY KEY, domain VARCHAR, title VARCHAR,
    published_at TIMESTAMPTZ, fetched_at TIMESTAMPTZ, cluster_id VARCHAR)"""
T0 = 1_700_000_000_000_000  # microseconds since the epoch (Nov 2023)
CHUNK = 100_000


def near_copies(rng: np.random.Generator, sigs: np.ndarray, keep: float) -> np.ndarray:
    """Signatures sharing about `keep` of their values with `sigs` (estimated Jaccard ~ keep)."""
    out = sigs.copy()
    mask = rng.random(out.shape) > keep
    out[mask] = rng.integers(0, 2**32, mask.sum(), dtype=np.uint32)
    return out


def build_base(path: Path, n: int) -> None:
    """n random signatures (2% near-copies of earlier ones) and their articles, clustered once."""
    rng = np.random.default_rng(1)
    con = duckdb.connect(str(path))
    con.execute(ARTICLES)
    con.execute(CLUSTER_SCHEMA)
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        sigs = rng.integers(0, 2**32, (m, NUM_PERM), dtype=np.uint32)
        planted = rng.random(m) < 0.02
        src = rng.integers(0, m, planted.sum())
        sigs[planted] = near_copies(rng, sigs[src], 0.7)
        ids = [f"a{lo + i:09d}" for i in range(m)]
        when = pa.array(T0 + (lo + np.arange(m)) * 60_000_000, pa.timestamp("us", tz="UTC"))
        staged = pa.table({"article_id": ids, "published_at": when, "fetched_at": when})  # noqa: F841
        con.execute("INSERT INTO articles SELECT article_id, 'example.org', 't', published_at, fetched_at, "
                    "article_id FROM staged")
        insert_signatures(con, ids, when, when, sigs)
    con.execute("CHECKPOINT")
    con.close()


def batch(con: duckdb.DuckDBPyConnection, n_new: int) -> list[SignedArticle]:
    """n_new rows: 10% near-copies of stored signatures (read by key), the rest random."""
    rng = np.random.default_rng(2)
    sigs = rng.integers(0, 2**32, (n_new, NUM_PERM), dtype=np.uint32)
    n_copy = n_new // 10
    total = con.execute("SELECT max(sig_key) FROM article_signatures").fetchone()[0]
    picks = pa.table({"sig_key": rng.choice(total, n_copy, replace=False).astype(np.int32) + 1})  # noqa: F841
    blobs = con.execute("SELECT signature FROM article_signatures JOIN picks USING (sig_key)").fetchall()
    stored = np.frombuffer(b"".join(b for (b,) in blobs), "<u4").reshape(-1, NUM_PERM)
    sigs[:len(stored)] = near_copies(rng, stored, 0.75)
    stamp = datetime.now(UTC)
    return [SignedArticle(f"new{i:07d}", stamp, stamp, sigs[i]) for i in range(n_new)]


def phase_add(path: Path, n_new: int) -> dict[str, float]:
    con = duckdb.connect(str(path))
    con.execute(ARTICLES)
    rows = batch(con, n_new)
    staged = pa.table({"article_id": [r.article_id for r in rows]})  # noqa: F841
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO articles SELECT article_id, 'example.org', 't', now(), now(), article_id FROM staged")
    t = time.perf_counter()
    changed = add_signatures(con, rows)
    seconds = time.perf_counter() - t
    con.execute("COMMIT")
    return {"add_seconds": seconds, "changed": changed}


def phase_rebuild(path: Path) -> dict[str, float]:
    con = duckdb.connect(str(path))
    t = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    changed = rebuild_clusters(con)
    con.execute("COMMIT")
    return {"rebuild_seconds": time.perf_counter() - t, "changed": changed}


def run_phase(args: list[str]) -> dict[str, float]:
    """Run one phase in a child process; its JSON line on stdout is the result."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="DuckDB file of the stored signatures (built if missing)")
    p.add_argument("--n", type=int, default=1_000_000, help="stored articles when building the base")
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--phase", choices=["build", "add", "rebuild"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        t = time.perf_counter()
        result = {"build": lambda: build_base(a.base, a.n) or {}, "add": lambda: phase_add(a.base, a.batch),
                  "rebuild": lambda: phase_rebuild(a.base)}[a.phase]()
        result |= {"seconds": time.perf_counter() - t,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(json.dumps(result))
        return
    if not a.base.exists():
        print("build", run_phase(["--phase", "build", "--base", str(a.base), "--n", str(a.n)]), flush=True)
        print("rebuild (base)", run_phase(["--phase", "rebuild", "--base", str(a.base)]), flush=True)
    work = a.base.with_suffix(".work.duckdb")
    shutil.copyfile(a.base, work)
    try:
        print("add", run_phase(["--phase", "add", "--base", str(work), "--batch", str(a.batch)]), flush=True)
        print("rebuild (after add)", run_phase(["--phase", "rebuild", "--base", str(work)]), flush=True)
    finally:
        work.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
