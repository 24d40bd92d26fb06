"""Throughput at the limit, and memory: one run over the same pages and cores (issue 7).

    uv run python bench/throughput.py --n 5000                 # all stages, results in bench/out/
    uv run python bench/throughput.py --n 50000 --stages a,b   # the scaling run
    uv run python bench/throughput.py --n 5000 --stages a,b --repeat 3

Stages (each in its own subprocess, its process tree sampled from /proc every 0.2 s):

    a   the limit: bare trafilatura (newsflow's profile, tasks/extract.py) over all cores, a
        fork pool over HTML already in memory; a2: newsflow's own per-page extractor
        (extract_page on the page's bytes, the cascade included) the same way; a3: the extraction
        workers' whole job (the raw record read back from the WARC, extraction, word count,
        MinHash signature) the same way: the most a backfill could do with nothing else running
    b   `newsflow backfill --warc` end to end into a fresh database; b0: the same stage
        functions without Prefect (the difference is Prefect's share)
    c   `newsflow ingest --urls-file` from the 20-host loopback site (bench/corpus.py serve),
        NEWSFLOW_HOST_DELAY=0
    d   tasks.load.load_batch alone on pre-built records (batches of the flows' size and one bulk
        batch, with and without near-duplicate clustering), against the floor: one INSERT of the
        same articles' columns into a bare table
    p   cProfile of the parent process during b (flow run in-process) -> profile-b.txt
    k   CPU a page of bare trafilatura, newsflow's extractor and the workers' whole job in one
        process, interleaved page by page on COST_PAGES pages: ratios the machine's noise cancels
        out of, bare/job being the ceiling of b/a

For b and c the time inside the flow (`runs.started_at` .. `runs.finished_at`) is the steady
state; what comes before is start-up (imports, Prefect's ephemeral server), reported apart. The
number of Prefect task runs comes from the ephemeral server's SQLite (PREFECT_HOME under the
output directory). Memory: peak over samples of the tree's summed PSS (shared pages counted
once) and RSS, and the largest single process. Results: bench/out/throughput-n{N}.json (the
latest run) and bench/out/history/ (every run, by start time and stages).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

REPO = corpus.REPO
# `newsflow ...` as the console script runs it; flows/cli_backfill.py registers `backfill` on the app
# (imported here in case flows/cli.py does not import it yet).
NEWSFLOW = [sys.executable, "-c", "import contextlib, sys\nwith contextlib.suppress(ImportError): import flows.cli_backfill\n"
            "from flows.cli import main\nsys.argv[0] = 'newsflow'\nmain()"]
HERE = [sys.executable, str(Path(__file__).resolve())]
PAGE = os.sysconf("SC_PAGE_SIZE")
COST_PAGES = 600  # stage k: ~1 min a pass over the three extractors
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- process-tree sampling

def _children() -> dict[int, list[int]]:
    """ppid -> pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(name))
    return tree


def _descendants(root: int) -> list[int]:
    tree, out, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(tree.get(pid, ()))
    return out


def _sample(pid: int) -> tuple[int, float, str] | None:
    """RSS bytes, cpu seconds and a short command of one process; None if it is gone."""
    # Written by hand: psutil is not a dependency and /proc gives PSS (`_pss`), which it needs root-free.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError, ValueError):
        return None
    if not cmd:  # a zombie: its CPU is the last live sample's, its command is gone
        return None
    return rss, (int(stat[11]) + int(stat[12])) / TICKS, cmd[:200]


def _pss(pid: int) -> int:
    """PSS bytes of one process (0 if it is gone). Reading it walks every page the process maps:
    ~6 ms of kernel time for a 300 MB process, where `_sample` costs microseconds."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.split()[-1] == "kB"}
    return kb.get("Pss", 0) * 1024


def classify(cmd: str) -> str:
    if ("prefect" in cmd and ("server" in cmd or "uvicorn" in cmd)) or "flows.startup" in cmd:
        return "prefect-server"  # Prefect's own temporary server, or the one flows/startup.py starts
    if "multiprocessing" in cmd or "forkserver" in cmd:
        return "workers"
    return "other"


TIMELINE_STEP = 1.0  # seconds between the timeline's points
# The sampler shares the 2 cores with what it measures. Reading every process's PSS every 0.2 s
# cost 16.5 ms of CPU a round for a backfill's tree (~4% of the machine) and about twice that for
# stage (a)'s, whose forked workers map the parent's pages: more of (a)'s time than of (b)'s.
# So each 0.2-second tick reads only RSS and CPU (microseconds), and PSS is read every
# PSS_EVERY seconds and whenever the tree's RSS is RSS_STEP above its highest at a PSS read
# (where a PSS peak is made: new pages). --pss-every 0 reads it every tick, as before 2026-11-30.
PSS_EVERY = 1.0
RSS_STEP = 16 * 1024 * 1024
SCAN_EVERY = 1.0  # seconds between scans of /proc for the tree's processes (~4 ms a scan)


class TreeSampler:
    """Samples a process tree until stopped: peak memory and each process's last CPU time."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every = pid, every
        self.pss_every = PSS_EVERY  # read at start: main() sets it from --pss-every
        self.peak_pss = self.peak_rss = self.peak_single = 0
        self.cpu: dict[int, tuple[float, str]] = {}
        # (seconds since start, PSS MB of the tree, of the root process, of its workers, CPU
        # seconds so far of the root and of the workers): is the memory flat, climbing with the
        # pages read, or a spike at the end (index builds)? When are the workers busy?
        self.timeline: list[tuple[float, int, int, int, float, float]] = []
        # The sample of the peak PSS, whole: the timeline keeps one sample a second, and a peak
        # between two of them (a checkpoint, a batch's Arrow tables) would otherwise go unplaced.
        self.peak_sample: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        self.pss_reads = 0
        # (seconds since start, {kind: CPU seconds so far}) at every tick: the CPU each kind of
        # process used during the flow run alone (`flow_cores`), start-up and exit left out
        self.cpu_ticks: list[tuple[float, dict[str, float]]] = []
        self.own_cpu = 0.0  # the sampler thread's own CPU (user and kernel): what it took from the run
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids: list[int] = []
        next_scan = next_pss = 0.0
        rss_mark = 0  # the tree's highest RSS at a PSS read
        last_point: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                pids, next_scan = _descendants(self.pid), now + SCAN_EVERY
            samples = {pid: got for pid in pids if (got := _sample(pid)) is not None}
            rss = sum(got[0] for got in samples.values())
            if now >= next_pss or rss > rss_mark + RSS_STEP:
                next_pss, rss_mark = now + self.pss_every, max(rss_mark, rss)
                self.pss_reads += 1
                last_point = self._pss_point(samples, now)
            self.peak_rss = max(self.peak_rss, rss)
            root_cpu = workers_cpu = 0.0
            for pid, (single_rss, cpu, cmd) in samples.items():
                self.peak_single = max(self.peak_single, single_rss)
                self.cpu[pid] = (cpu, cmd)
                if pid == self.pid:
                    root_cpu = cpu
                elif classify(cmd) == "workers":
                    workers_cpu += cpu
            self.cpu_ticks.append((now - self._started, self._cpu_by_kind()))
            if not self.timeline or last_point[0] - self.timeline[-1][0] >= TIMELINE_STEP:
                self.timeline.append((*last_point, round(root_cpu, 1), round(workers_cpu, 1)))
            self.own_cpu = time.thread_time()
            self._stop.wait(self.every)

    def _pss_point(self, samples: dict[int, tuple[int, float, str]], now: float) -> tuple[float, int, int, int]:
        """(seconds since start, PSS MB of the tree, of the root, of the workers); keeps the peak."""
        mb = 1024 * 1024
        each = {pid: _pss(pid) for pid in samples}
        pss = sum(each.values())
        root = each.get(self.pid, 0)
        workers = sum(b for pid, b in each.items() if pid != self.pid and classify(samples[pid][2]) == "workers")
        point = (round(now - self._started, 1), pss // mb, root // mb, workers // mb)
        if pss > self.peak_pss:
            self.peak_pss, self.peak_sample = pss, point
        return point

    def _cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds so far of every process seen, summed by kind (an ended one keeps its last)."""
        cpu: dict[str, float] = {}
        for pid, (seconds, cmd) in self.cpu.items():
            kind = "parent" if pid == self.pid else classify(cmd)
            cpu[kind] = cpu.get(kind, 0.0) + seconds
        return cpu

    def report(self) -> dict[str, Any]:
        cpu = {kind: round(seconds, 2) for kind, seconds in self._cpu_by_kind().items()}
        mb = 1024 * 1024
        return {"peak_pss_mb": round(self.peak_pss / mb), "peak_rss_mb": round(self.peak_rss / mb),
                # (seconds since start, PSS MB of the tree, of the root process, of its workers)
                "peak_sample": list(self.peak_sample),
                "peak_single_rss_mb": round(self.peak_single / mb), "cpu_s": cpu,
                "sampler": {"cpu_s": round(self.own_cpu, 2), "pss_reads": self.pss_reads},
                # each process apart: the forkserver (imports once) against the workers it forks
                "cpu_s_by_process": sorted(((("parent" if pid == self.pid else classify(cmd)), pid, round(seconds, 2))
                                            for pid, (seconds, cmd) in self.cpu.items() if seconds >= 0.05),
                                           key=lambda row: -row[2]),
                "pss_timeline_mb": self.timeline, "_cpu_ticks": self.cpu_ticks}


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `cmd`, sampling its tree; wall time, launch/exit clock times, exit code, memory, CPU."""
    launched = datetime.now(UTC)
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        with TreeSampler(proc.pid) as sampler:
            rc = proc.wait()
    result = {"rc": rc, "wall_s": round(time.monotonic() - start, 2), "launched": launched,
              "exited": datetime.now(UTC), **sampler.report(), "log": str(log)}
    if rc != 0:
        print(f"  ! {' '.join(cmd[:4])} exited {rc}; see {log}", file=sys.stderr)
    return result


def base_env(work: Path, prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_RAW_DIR=str(work / "raw"), NEWSFLOW_CACHE_DIR=str(work / "cache"),
               PREFECT_HOME=str(prefect_home), PYTHONUNBUFFERED="1")
    return env


# --------------------------------------------------------------------------- (a) the limit

def _warc_pages(warc: Path) -> list[tuple[str, bytes, str | None]]:
    from warcio.archiveiterator import ArchiveIterator

    pages = []
    with warc.open("rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type == "response":
                pages.append((record.rec_headers.get_header("WARC-Target-URI"), record.content_stream().read(),
                              record.http_headers.get_header("Content-Type")))
    return pages


_PAGES: list[tuple[str, bytes, str | None]] = []


def _bare(index: int) -> bool:
    from trafilatura import bare_extraction

    from tasks.extract import PROFILES, SETTINGS_TAG

    url, body, _ = _PAGES[index]
    return bare_extraction(body, url=url, with_metadata=True, **PROFILES[SETTINGS_TAG]) is not None


def _newsflow(index: int) -> bool:
    from tasks.extract import extract_page

    url, body, ctype = _PAGES[index]
    return extract_page(body, url, content_type=ctype) is not None


_JOBS: list = []


def _worker_job(index: int) -> bool:
    from tasks.extract import _extract_job
    from tasks.records import Extracted

    return isinstance(_extract_job(_JOBS[index]), Extracted)


def limit(warc: Path, mode: str, workers: int) -> dict[str, Any]:
    """Pages/s of one extractor over all pages, in a fork pool (pages inherited, not pickled).
    Mode "job" runs the extraction workers' whole job instead: the raw record read back from the
    WARC, decoded, extracted, word-counted and signed (`tasks.extract._extract_job`)."""
    import multiprocessing

    if mode == "job":
        from tasks.extract import _job
        from tasks.settings import Settings
        from tasks.sources import iter_warc

        settings = Settings()
        _JOBS.extend(_job(record, settings, {}) for record in iter_warc(warc))
    else:
        _PAGES.extend(_warc_pages(warc))
    pages = len(_JOBS) if mode == "job" else len(_PAGES)
    fn = {"bare": _bare, "newsflow": _newsflow, "job": _worker_job}[mode]
    fn(0)  # imports and lazy set-up before the fork: not timed, shared by the workers
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        found = sum(pool.imap_unordered(fn, range(pages), chunksize=8))
    seconds = time.monotonic() - started
    return {"pages": pages, "seconds": round(seconds, 2), "pages_per_s": round(pages / seconds, 1), "with_text": found}


def cost(warc: Path, pages: int) -> dict[str, Any]:
    """(k) CPU a page of bare trafilatura, newsflow's extractor and the workers' whole job, on
    the same pages in one process, interleaved page by page (the order alternating), so that the
    machine's speed, which moves by 2x within an hour here, cancels out of the ratios.

    bare / job is the most b/a can reach when everything else (the loading process, Prefect,
    DuckDB) costs nothing: b's workers do the job on every page, (a) does bare trafilatura.
    """
    from trafilatura import bare_extraction

    from tasks.archive import read_raw
    from tasks.extract import PROFILES, SETTINGS_TAG, _extract_job, _job, extract_page
    from tasks.settings import Settings
    from tasks.similarity import signatures
    from tasks.sources import iter_warc

    settings = Settings()
    jobs = []
    for record in iter_warc(warc):
        jobs.append(_job(record, settings, {}))
        if len(jobs) >= pages:
            break
    inputs = [(job, read_raw(job.raw)) for job in jobs]

    def bare(job: Any, raw: Any) -> object:
        return bare_extraction(raw.body, url=job.url, with_metadata=True, **PROFILES[SETTINGS_TAG])

    def extractor(job: Any, raw: Any) -> object:
        return extract_page(raw.body, job.url, content_type=job.content_type or raw.header("content-type"))

    def whole_job(job: Any, raw: Any) -> object:
        return _extract_job(job)

    def read_back(job: Any, raw: Any) -> object:
        return read_raw(job.raw)

    texts = [e.text for job, raw in inputs if (e := extractor(job, raw)) is not None]
    steps = {"bare": bare, "extractor": extractor, "job": whole_job, "read_back": read_back}
    spent = dict.fromkeys([*steps, "signature"], 0.0)
    clock = time.process_time
    for i, (job, raw) in enumerate(inputs):
        for name in (list(steps) if i % 2 else list(reversed(steps))):
            started = clock()
            steps[name](job, raw)
            spent[name] += clock() - started
    started = clock()
    signatures(texts)
    spent["signature"] = clock() - started
    ms = {k: round(1000 * v / (len(texts) if k == "signature" else len(inputs)), 3) for k, v in spent.items()}
    return {"pages": len(inputs), "cpu_ms_per_page": ms,
            "bare/extractor": round(spent["bare"] / spent["extractor"], 3),
            "bare/job (the ceiling of b/a)": round(spent["bare"] / spent["job"], 3)}


# --------------------------------------------------------------------------- (b0) without Prefect

def plain_backfill(warc: Path, db: Path) -> dict[str, Any]:
    """The backfill flow's stage functions, pipelined the same way by plain threads (no Prefect)."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.backfill import BatchStages, Request, backfill_prepare, plan, run_partitions
    from tasks.load import finish_run, held, start_run
    from tasks.pipeline import load_prepared
    from tasks.settings import Settings

    request = Request(warcs=(str(warc),)).check()
    settings = Settings()
    run_id = f"plain-{uuid.uuid4()}"
    with held(db), ThreadPoolExecutor(4) as threads:
        start_run(db, run_id, "backfill", {"warcs": [str(warc)]})
        partitions = plan(request, settings, db)
        stages = BatchStages(
            lambda batch: threads.submit(backfill_prepare, db, batch, settings, request.window),
            lambda prepared, row: threads.submit(load_prepared, db, run_id, prepared, row))
        results = run_partitions(partitions, settings, db, run_id, (), stages)
        finish_run(db, run_id, sum(r.counts["records"] for r in results))
    from tasks.extract import shutdown_pool

    shutdown_pool()
    return {"run_id": run_id}


# --------------------------------------------------------------------------- (d) DuckDB load alone

def _records(n: int, seed: int) -> list:
    """Normalised records with extracted text and MinHash signature, as extraction hands them to load."""
    from tasks.normalise import normalise_batch
    from tasks.records import Article, Extracted, RawRef, SourceKind
    from tasks.similarity import signatures

    now = datetime.now(UTC)
    records = []
    for i, page in enumerate(corpus.iter_pages(n, seed)):
        text = "\n".join(page.paragraphs)
        [signature] = signatures([text])  # computed in the extraction workers, not by the load
        extracted = Extracted(text=text, title=page.title, authors=page.authors,
                              date=page.published.isoformat(), site_name=page.outlet, description=page.description,
                              categories=(page.section,), tags=page.keywords, image=page.image or None,
                              language=page.language, canonical_link=page.url, extractor_version="bench",
                              signature=None if signature is None else signature.astype("<u4").tobytes())
        records.append(Article(url=page.url, source="bench", source_kind=SourceKind.WARC, final_url=page.url,
                               http_status=200, fetched_at=now, raw=RawRef("bench.warc.gz", i * 1000, 1000),
                               extracted=extracted))
    return normalise_batch(records)


STRETCH = 5000


def load_only(n: int, seed: int, work: Path) -> dict[str, Any]:
    """articles/s of load_batch into fresh databases (held open, as the flows do): batches of the
    flows' size and one bulk batch, with and without the near-duplicate clustering step inside it;
    and the floor under them, measured on the same records: DuckDB inserting the articles' columns
    into a bare table (no dedupe, aliases, fetches or clustering), from Python objects and from an
    Arrow table already built."""
    import tasks.load as load
    from tasks.records import batches
    from tasks.settings import Settings

    records = _records(n, seed)
    batch = Settings().batch_size
    out: dict[str, Any] = {"records": len(records), "batch_size": batch, "floor": insert_floor(records, work)}
    clustering = load._cluster
    for cluster in (True, False):
        load._cluster = clustering if cluster else (lambda con, new: 0)
        for size in (batch, len(records)):
            db = work / f"load-{cluster}-{size}.duckdb"
            db.unlink(missing_ok=True)
            load.ensure_schema(db)
            started = last = time.monotonic()
            loaded, done, stretches = 0, 0, []  # articles/s of each STRETCH records: does the load slow as the DB grows?
            with load.held(db):  # as the flows run: the database open for the whole run
                for chunk in batches(records, size):
                    loaded += sum(r.state == "loaded" for r in load.load_batch(db, "bench", chunk))
                    done += len(chunk)  # stretches by records handed to the load, loaded or not
                    if size < len(records) and done // STRETCH > len(stretches):
                        now = time.monotonic()
                        stretches.append(round(STRETCH / (now - last)))
                        last = now
            seconds = time.monotonic() - started  # the final close (checkpoint) included
            out[f"{'batches' if size < len(records) else 'bulk'}_{'cluster' if cluster else 'nocluster'}"] = {
                "seconds": round(seconds, 2), "articles_per_s": round(len(records) / seconds), "loaded": loaded,
                **({"per_stretch": stretches} if stretches else {})}
    load._cluster = clustering
    floor = out["floor"]["from_python_per_s"]
    out["ratios_to_floor"] = {k: round(v["articles_per_s"] / floor, 3) for k, v in out.items()
                              if isinstance(v, dict) and "articles_per_s" in v}
    return out


def insert_floor(records: list, work: Path) -> dict[str, Any]:
    """The fastest any load of these articles could be here: one INSERT of their extracted columns
    (text, title, authors, dates... as tasks/load.py builds them; not the URL and provenance
    columns) into an empty table, committed and closed; timed from the records' Python objects,
    and from an Arrow table already built."""
    import duckdb
    import pyarrow as pa

    import tasks.load as load
    from tasks.settings import Settings

    rows = load._first_per([r.finish(load.State.LOADED) for r in records], lambda r: r.article_id)
    out: dict[str, Any] = {"articles": len(rows)}
    for label in ("from_python", "from_arrow"):
        db = work / f"floor-{label}.duckdb"
        db.unlink(missing_ok=True)
        ready = pa.table(load._extraction_columns(rows)) if label == "from_arrow" else None
        con = duckdb.connect(str(db), config={"memory_limit": load.writer_memory_limit(Settings(), len(rows))})
        started = time.monotonic()
        staged = ready if ready is not None else pa.table(load._extraction_columns(rows))  # noqa: F841
        con.execute("CREATE TABLE articles AS SELECT * FROM staged LIMIT 0")
        con.execute("INSERT INTO articles SELECT * FROM staged")
        con.close()  # the checkpoint: the rows are in the file
        seconds = time.monotonic() - started
        out[f"{label}_s"] = round(seconds, 2)
        out[f"{label}_per_s"] = round(len(rows) / seconds)
    return out


# --------------------------------------------------------------------------- (p) profile of the parent

def profile_backfill(warc: Path, db: Path, out: Path) -> dict[str, Any]:
    """The backfill flow in this process under cProfile; own time summed by package."""
    import cProfile
    import pstats

    from flows.backfill import backfill
    from tasks.extract import shutdown_pool

    profiler = cProfile.Profile()
    started = time.monotonic()
    profiler.enable()
    backfill(warcs=[str(warc)], db=str(db))
    profiler.disable()
    wall = time.monotonic() - started
    shutdown_pool()
    stats = pstats.Stats(profiler)
    by_package: dict[str, float] = {}
    for (filename, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(filename, func)] = by_package.get(_package(filename, func), 0.0) + tottime
    with out.open("w") as text:
        stats.stream = text  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
    top = dict(sorted(((k, round(v, 2)) for k, v in by_package.items()), key=lambda kv: -kv[1])[:15])
    return {"wall_s": round(wall, 2), "own_time_by_package_s": top, "profile": str(out)}


def _package(filename: str, func: str) -> str:
    if filename == "~":
        return f"builtin:{func.split(' of ')[0][:40]}"
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            rest = filename.split(marker, 1)[1].lstrip("/")
            return rest.split("/")[0 if marker == "site-packages/" else 1].removesuffix(".py")
    return Path(filename).parent.name + "/" + Path(filename).name if str(REPO) in filename else filename


# --------------------------------------------------------------------------- flow runs and Prefect

def run_times(db: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id, started, finished = con.execute(
            "SELECT run_id, started_at, finished_at FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        states = dict(con.execute("SELECT state, count(*) FROM fetches WHERE run_id = ? GROUP BY 1", [run_id]).fetchall())
    finally:
        con.close()
    return {"run_id": run_id, "started": started, "finished": finished, "states": states,
            "pages": sum(states.values())}


def task_runs(prefect_home: Path, flow_run_id: str) -> dict[str, int] | None:
    db = prefect_home / "prefect.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, count(*) FROM task_run WHERE flow_run_id = ? GROUP BY 1",
                           [flow_run_id]).fetchall()
        if not rows:  # stored without dashes on some versions
            rows = con.execute("SELECT name, count(*) FROM task_run WHERE replace(flow_run_id, '-', '') = ? GROUP BY 1",
                               [flow_run_id.replace("-", "")]).fetchall()
    counts: dict[str, int] = {}
    for name, count in rows:
        key = name.rsplit("-", 1)[0] if name[-3:].isalnum() and "-" in name else name
        counts[key] = counts.get(key, 0) + count
    counts["total"] = sum(count for _, count in rows)
    return counts


def flow_cores(ticks: list[tuple[float, dict[str, float]]], start: float, end: float) -> dict[str, float]:
    """Cores each kind of process used between `start` and `end` (seconds since launch): its CPU
    seconds in that window over the window's length. The flow's steady state: in it the
    extraction workers share the two cores with the loading process, Prefect's server and the
    sampler, which is what b/a measures; start-up and the closing steps are apart."""
    inside = [(t, cpu) for t, cpu in ticks if start <= t <= end]
    if len(inside) < 2:
        return {}
    (t0, first), (t1, last) = inside[0], inside[-1]
    return {kind: round((last.get(kind, 0.0) - first.get(kind, 0.0)) / (t1 - t0), 3) for kind in sorted(last)}


def flow_stage(name: str, cmd: list[str], env: dict[str, str], db: Path, out: Path, prefect: bool) -> dict[str, Any]:
    """Run one end-to-end command and split its wall time into start-up, flow and exit."""
    m = measure(cmd, env, out / f"{name}.log")
    ticks = m.pop("_cpu_ticks")
    if m["rc"] != 0:
        return m
    run = run_times(db)
    flow_s = (run["finished"] - run["started"]).total_seconds()
    m.update(pages=run["pages"], states=run["states"], flow_s=round(flow_s, 2),
             startup_s=round((run["started"] - m["launched"]).total_seconds(), 2),
             exit_s=round((m["exited"] - run["finished"]).total_seconds(), 2),
             pages_per_s=round(run["pages"] / flow_s, 1), pages_per_s_end_to_end=round(run["pages"] / m["wall_s"], 1))
    start = m["startup_s"]
    m["flow_cores"] = flow_cores(ticks, start, start + flow_s)
    if prefect:
        m["task_runs"] = task_runs(Path(env["PREFECT_HOME"]), str(run["run_id"]))
    return m


def prefect_startup(env: dict[str, str], out: Path, label: str) -> dict[str, Any]:
    """Start-up cost of Prefect alone: import, then a no-op flow (starts the ephemeral server)."""
    m = measure(HERE + ["_noop_flow"], env, out / f"prefect-startup-{label}.log")
    result = _json_line(out / f"prefect-startup-{label}.log")
    return {**result, "wall_s": m["wall_s"], "cpu_s": m["cpu_s"]}


def noop_flow() -> dict[str, float]:
    started = time.monotonic()
    import tasks  # noqa: F401  (newsflow's Prefect defaults: the longer server start-up timeout)
    from prefect import flow

    imported = time.monotonic()

    @flow(name="noop")
    def noop() -> int:
        return 1

    noop()
    done = time.monotonic()
    return {"import_s": round(imported - started, 2), "first_flow_run_s": round(done - imported, 2)}


# --------------------------------------------------------------------------- the run

def run(n: int, seed: int, stages: list[str], repeat: int, workers: int, port: int,
        batch_size: int | None = None, settings: dict[str, str] | None = None) -> dict[str, Any]:
    out = corpus.OUT
    directory = corpus.ensure(n, seed)
    warc = directory / corpus.WARC
    prefect_home = out / "prefect-home"
    results: dict[str, Any] = {"n": n, "seed": seed, "cores": os.cpu_count(), "workers": workers,
                               "corpus": json.loads((directory / corpus.META).read_text())["counts"],
                               "batch_size": batch_size, "settings": settings or {}, "stages": stages,
                               "pss_every_s": PSS_EVERY,
                               "started": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
                               "loadavg_before": os.getloadavg(), "runs": []}
    for attempt in range(repeat):
        work = out / f"work-n{n}-{attempt}"
        _clean(work)
        env = base_env(work, prefect_home)
        env["NEWSFLOW_EXTRACT_WORKERS"] = str(workers)
        if batch_size is not None:
            env["NEWSFLOW_BATCH_SIZE"] = str(batch_size)
        env.update({f"NEWSFLOW_{k.upper()}": v for k, v in (settings or {}).items()})
        r: dict[str, Any] = {}
        if attempt == 0 and ("b" in stages or "c" in stages):
            r["prefect_startup_first"] = prefect_startup(env, work, "first")
            r["prefect_startup_warm"] = prefect_startup(env, work, "warm")
        for mode, key in (("bare", "a"), ("newsflow", "a2"), ("job", "a3")):
            if key in stages:
                m = measure(HERE + ["_limit", str(warc), mode, str(workers)], env, work / f"{key}.log")
                r[key] = {**_json_line(work / f"{key}.log"), **_mem(m)}
                _say(key, r[key])
        if "k" in stages and attempt == 0:
            m = measure(HERE + ["_cost", str(warc), str(min(n, COST_PAGES))], env, work / "k.log")
            r["k"] = {**_json_line(work / "k.log"), **_mem(m)}
            _say("k", r["k"])
        if "b" in stages:
            db = work / "b.duckdb"
            r["b"] = flow_stage("b", NEWSFLOW + ["backfill", "--warc", str(warc), "--db", str(db)], env, db, work, True)
            _say("b", r["b"])
            _save(results, r, n)
        if "b0" in stages:
            db0 = work / "b0.duckdb"
            r["b0"] = flow_stage("b0", HERE + ["_plain_backfill", str(warc), str(db0)], env, db0, work, False)
            _say("b0", r["b0"])
        if "d" in stages and attempt == 0:
            m = measure(HERE + ["_load", str(min(n, 50000)), str(seed), str(work)], env, work / "d.log")
            r["d"] = {**_json_line(work / "d.log"), **_mem(m)}
            _say("d", r["d"])
            _save(results, r, n)
        if "c" in stages:
            r["c"] = ingest_stage(directory, work, env, port)
            _say("c", r["c"])
        if "p" in stages and attempt == 0:
            m = measure(HERE + ["_profile_backfill", str(warc), str(work / "p.duckdb"), str(work / "profile-b.txt")],
                        env, work / "p.log")
            r["p"] = _json_line(work / "p.log")
            _say("p", r["p"])
        _save(results, r, n)
        _say("ratios", r["ratios"])
        results["runs"].append(r)
    if repeat > 1:
        # The machine is shared: single ratios swing by +-0.1 between back-to-back runs, so a
        # repeated run reports each ratio's median (and range) over its runs.
        results["ratio_medians"] = ratio_medians(results["runs"])
        _say("ratio medians", results["ratio_medians"])
    results["loadavg_after"] = os.getloadavg()
    print(f"results: {_save(results, None, n)}")
    return results


def _save(results: dict[str, Any], current: dict[str, Any] | None, n: int) -> Path:
    """Write the results so far (a long run that is cut short keeps what it measured): the latest
    run of N pages, and the same in bench/out/history/ under the run's start time and stages, so
    that a later run of other stages does not take the figures of this one with it."""
    if current is not None:
        current["ratios"] = _ratios(current)
    runs = results["runs"] + ([current] if current is not None else [])
    text = json.dumps({**results, "runs": runs, "loadavg_now": os.getloadavg()}, indent=1, default=str) + "\n"
    history = corpus.OUT / "history" / f"throughput-n{n}-{results['started']}-{'-'.join(results['stages'])}.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text(text)
    path = corpus.OUT / f"throughput-n{n}.json"
    path.write_text(text)
    return path


def ingest_stage(directory: Path, work: Path, env: dict[str, str], port: int) -> dict[str, Any]:
    """(c): the loopback site up in its own process, `newsflow ingest --urls-file` against it."""
    urls = work / "urls.txt"
    urls.write_text("\n".join(corpus.site_urls(directory, port)) + "\n")
    site_env = {**env}
    server = subprocess.Popen([sys.executable, str(Path(corpus.__file__)), "serve", "--dir", str(directory),
                               "--port", str(port)], env=site_env, stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        server.stdout.readline()  # "serving ..." once every address listens
        env = {**env, "NEWSFLOW_HOST_DELAY": "0", "NEWSFLOW_ALLOW_PRIVATE_HOSTS": corpus.allow_list()}
        db = work / "c.duckdb"
        result = flow_stage("c", NEWSFLOW + ["ingest", "--urls-file", str(urls), "--db", str(db)], env, db, work, True)
        got = _sample(server.pid)
        result["site_server_cpu_s"] = round(got[1], 2) if got else None
    finally:
        server.terminate()
        server.wait(10)
    return result


def _ratios(r: dict[str, Any]) -> dict[str, float]:
    out = {}
    if "a" in r:
        a = r["a"]["pages_per_s"]
        for key in ("a2", "a3"):
            if key in r:
                out[f"{key}/a"] = round(r[key]["pages_per_s"] / a, 3)
        if "a3" in r and "b" in r and "pages_per_s" in r["b"]:
            out["b/a3"] = round(r["b"]["pages_per_s"] / r["a3"]["pages_per_s"], 3)
        for key in ("b", "b0", "c"):
            if key in r and "pages_per_s" in r[key]:
                out[f"{key}/a"] = round(r[key]["pages_per_s"] / a, 3)
                out[f"{key}/a end-to-end"] = round(r[key]["pages_per_s_end_to_end"] / a, 3)
        # Load-independent: CPU seconds per page of the whole tree (start-up included for b, c);
        # on a shared machine this is the figure to compare, wall-clock pages/s follow the load.
        a_cpu = sum(r["a"]["cpu_s"].values()) / r["a"]["pages"]
        for key in ("a2", "a3", "b", "b0", "c"):
            if key in r and r[key].get("pages"):
                out[f"{key} cpu ms/page"] = round(1000 * sum(r[key]["cpu_s"].values()) / r[key]["pages"], 1)
                out[f"a/{key} by cpu"] = round(a_cpu / (sum(r[key]["cpu_s"].values()) / r[key]["pages"]), 3)
        out["a cpu ms/page"] = round(1000 * a_cpu, 1)
    # b/a = (cores b's workers got / cores a's got) x (a's CPU a page / b's workers' CPU a page)
    if "a" in r and r["a"].get("seconds"):
        out["a workers' cores"] = round(r["a"]["cpu_s"].get("other", 0.0) / r["a"]["seconds"], 3)
    for key in ("b", "c"):
        if key in r and r[key].get("flow_cores"):
            out[f"{key} cores during the flow"] = r[key]["flow_cores"]
    if "k" in r:
        out["b/a ceiling (k: bare/job by cpu)"] = r["k"]["bare/job (the ceiling of b/a)"]
    if "b" in r and "b0" in r and "flow_s" in r["b"] and "flow_s" in r["b0"]:
        out["prefect share of b flow time"] = round(1 - r["b0"]["flow_s"] / r["b"]["flow_s"], 3)
    return out


def _json_line(log: Path) -> dict[str, Any]:
    """The JSON result an internal command printed (Prefect may log after it)."""
    return json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{")))


def _mem(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("peak_pss_mb", "peak_rss_mb", "peak_sample", "peak_single_rss_mb", "cpu_s", "sampler", "wall_s")}


def _say(key: str, value: dict[str, Any]) -> None:
    shown = {k: v for k, v in value.items() if k not in ("pss_timeline_mb", "cpu_s_by_process")}  # in the JSON only
    print(f"{key}: {json.dumps(shown, default=str)}", flush=True)


def _clean(work: Path) -> None:
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not (sep and name.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (a newsflow setting), got {item!r}")
    return name.strip(), value


def ratio_medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each ratio's median and range over the runs that have it; a ratio made of several values
    (the cores of each kind of process) gives one entry per value, named `ratio: value`."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.get("ratios", {}).items():
            parts = ((f"{name}: {part}", v) for part, v in value.items()) if isinstance(value, dict) else [(name, value)]
            for key, number in parts:
                values.setdefault(key, []).append(number)
    return {key: {"median": round(statistics.median(v), 3), "min": min(v), "max": max(v), "runs": len(v)}
            for key, v in sorted(values.items())}


def main(argv: list[str] | None = None) -> None:
    global PSS_EVERY
    argv = sys.argv[1:] if argv is None else argv
    internal: dict[str, Any] = {
        "_limit": lambda a: limit(Path(a[0]), a[1], int(a[2])),
        "_plain_backfill": lambda a: plain_backfill(Path(a[0]), Path(a[1])),
        "_load": lambda a: load_only(int(a[0]), int(a[1]), Path(a[2])),
        "_profile_backfill": lambda a: profile_backfill(Path(a[0]), Path(a[1]), Path(a[2])),
        "_noop_flow": lambda a: noop_flow(),
        "_cost": lambda a: cost(Path(a[0]), int(a[1])),
    }
    if argv and argv[0] in internal:
        print(json.dumps(internal[argv[0]](argv[1:]), default=str), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stages", default="a,a2,a3,b,b0,c,d,p,k", help="comma-separated: a,a2,a3,b,b0,c,d,p,k")
    parser.add_argument("--repeat", type=int, default=1, help="repeat a, b and c (the machine is shared: noise)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port", type=int, default=corpus.DEFAULT_PORT)
    parser.add_argument("--batch-size", type=int, help="NEWSFLOW_BATCH_SIZE for b, b0 and c (default: newsflow's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=_setting,
                        help="a newsflow setting for every stage, e.g. duckdb_memory_limit=256MB (repeatable)")
    parser.add_argument("--pss-every", type=float, default=PSS_EVERY,
                        help="seconds between PSS reads of the process tree (0: every 0.2-second tick)")
    args = parser.parse_args(argv)
    PSS_EVERY = args.pss_every
    settings = dict(args.set)
    run(args.n, args.seed, args.stages.split(","), args.repeat, args.workers, args.port, args.batch_size, settings)


if __name__ == "__main__":
    main()
