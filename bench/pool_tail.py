"""The extraction pool's idle time at the end of each batch (issue 7).

    uv run python bench/pool_tail.py --n 5000 [--batch 500] [--rounds 6]

Batches use the worker pool one at a time (tasks/extract.py `run_pool`), so the workers that run
out of chunks first wait for the batch's last one. This runs the workers' real job on the
corpus's pages (bench/corpus.py; the first `--batch` pages of the WARC) through `run_pool`, one
batch after another, cutting the batch into chunks two ways, interleaved round by round so that
the machine's speed drifts out of the comparison:

    fixed    equal chunks of min(MAX_CHUNK, batch / (workers * 4)) pages (newsflow before guided
             chunks)
    guided   `tasks.extract.chunk_sizes`: chunks shrink to one page at the batch's end

Each page's job reports when it ended and in which worker. A batch's idle tail is, summed over
the workers, the time from each worker's last page to the batch's end (what a worker waits for
the others), in core-seconds; its makespan is the batch's wall time. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

import tasks.extract as extract  # noqa: E402


def timed_job(job: Any) -> tuple[int, float]:
    """The workers' whole job on one page, then (worker pid, when it ended)."""
    extract._extract_job(job)
    return os.getpid(), time.monotonic()


def fixed_sizes(items: int, workers: int) -> list[int]:
    size = max(1, min(extract.MAX_CHUNK, items // (max(1, workers) * 4)))
    return [min(size, items - start) for start in range(0, items, size)]


def one_batch(jobs: list[Any], workers: int, timeout: float) -> dict[str, float]:
    started = time.monotonic()
    outcomes = extract.run_pool(timed_job, jobs, workers, timeout)
    ended = time.monotonic()
    last: dict[int, float] = {}
    for outcome in outcomes:
        pid, at = outcome.value
        last[pid] = max(last.get(pid, 0.0), at)
    # a worker that ran nothing in this batch waited all of it
    idle = sum(ended - at for at in last.values()) + (workers - len(last)) * (ended - started)
    return {"makespan_s": ended - started, "idle_tail_core_s": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="the corpus (bench/corpus.py build --n N)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500, help="pages a batch (Settings.batch_size)")
    parser.add_argument("--rounds", type=int, default=6, help="batches of each way, interleaved")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from tasks.settings import Settings
    from tasks.sources import iter_warc

    settings = Settings()
    warc = corpus.ensure(args.n, args.seed) / corpus.WARC
    jobs = []
    for record in iter_warc(warc):
        jobs.append(extract._job(record, settings, {}))
        if len(jobs) >= args.batch:
            break
    guided = extract.chunk_sizes
    ways = {"fixed": fixed_sizes, "guided": guided}
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    extract.start_pool(args.workers)
    one_batch(jobs[: args.workers * 8], args.workers, settings.extract_timeout)  # warm the workers
    try:
        for round_ in range(args.rounds):
            for way in (list(ways) if round_ % 2 else list(reversed(ways))):
                extract.chunk_sizes = ways[way]  # _PoolRun looks it up by name at each batch
                results[way].append(one_batch(jobs, args.workers, settings.extract_timeout))
    finally:
        extract.chunk_sizes = guided
        extract.shutdown_pool()
    summary = {
        way: {key: {"median": round(statistics.median(r[key] for r in runs), 3),
                    "all": [round(r[key], 3) for r in runs]}
              for key in ("makespan_s", "idle_tail_core_s")}
        for way, runs in results.items()}
    print(json.dumps({"pages_a_batch": len(jobs), "workers": args.workers, "rounds": args.rounds,
                      "chunks_a_batch": {w: len(f(len(jobs), args.workers)) for w, f in ways.items()},
                      **summary}, indent=1))


if __name__ == "__main__":
    main()
