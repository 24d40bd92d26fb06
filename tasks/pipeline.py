"""Batches through the stages: prepare (skip known -> fetch -> extract -> normalise), then load.

Two task runs per batch, `prepare-batch` and `load-batch`, overlapped by `pipelined`: while one
batch loads, the next is extracted and the one after it fetched, so the extraction pool never
waits on DuckDB, the network or Prefect's bookkeeping (bench/throughput.py measured the pool
idle for a fifth of a backfill when each batch ran its stages one after another). Loads run one
at a time and in order, so a run's tables do not depend on thread timing, and the load that
finishes a backfill partition comes after every other load of it.

The stage functions stay separate and plain; this module only composes them.
"""

from __future__ import annotations

import gc
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tasks.dedupe import skip_forgotten, skip_known_urls
from tasks.extract import extract_batch
from tasks.fetch import fetch_batch
from tasks.load import forgotten_rules, known_urls, load_batch
from tasks.normalise import normalise_batch
from tasks.records import Article
from tasks.settings import Settings

# Batches prepared at once: one extracting, the next reading the database and fetching (then
# waiting for the pool). More would only hold more records in memory: the pool is the limit.
AHEAD = 2

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


class Pending(Protocol[T]):
    """Work started elsewhere: a Prefect future, a concurrent.futures.Future."""

    def result(self) -> T: ...


def pipelined(items: Iterable[T], prepare: Callable[[T], Pending[P]],
              load: Callable[[T, P], Pending[R]], ahead: int = AHEAD) -> Iterator[tuple[T, R]]:
    """Each item with its load's result, in order: up to `ahead` prepares in flight, loads one
    at a time and in order, each started once its prepare and the previous load are done.

    When reading `items` fails (a WARC cut short), the items already read are prepared and
    loaded as usual, then the error goes on: nothing read before the damage is lost. On any
    other error (or when the caller stops early) nothing started is left running: every
    pending prepare and load is waited for before the error goes on.
    """
    preparing: deque[tuple[T, Pending[P]]] = deque()
    loading: tuple[T, Pending[R]] | None = None
    end = object()  # after the last item: drain what is in flight
    source = _Guarded(items)
    # Everything tracked now (modules, Prefect, the run's setup) outlives the batches: kept out of
    # the full collections after each load (_loaded), which then take ~35 ms instead of ~0.3 s.
    # Freezing is a constant-time move, not a pass (a backfill may run hundreds of one-batch
    # partitions); garbage already there waits for the unfreeze below.
    gc.freeze()
    try:
        for item in chain(source, [end]):
            if item is not end:
                preparing.append((item, prepare(item)))  # type: ignore[arg-type]
            while preparing and (len(preparing) >= ahead or item is end):
                ready_item, ready = preparing.popleft()
                prepared = ready.result()
                if loading is not None:
                    yield _loaded(loading)
                loading = (ready_item, load(ready_item, prepared))
        if loading is not None:
            done, loading = loading, None
            yield _loaded(done)
        if source.error is not None:
            raise source.error
    except GeneratorExit:  # the caller stopped: nothing more is handed out
        raise
    except BaseException:
        # A prepare or a load failed: the load already running is finished and handed out (its
        # batch is in the tables, so it counts), then the error goes on.
        if loading is not None:
            done, loading = loading, None
            yield _loaded(done)
        raise
    finally:
        for pending in [p for _, p in preparing] + ([loading[1]] if loading else []):
            try:
                pending.result()
            except BaseException:  # noqa: BLE001 (the first error is the one raised)
                pass
        gc.unfreeze()  # back under the collector: what the setup leaves behind goes with the rest


class _Guarded(Iterator[T]):
    """`items`, ending where reading them fails; the error is kept in `error`."""

    def __init__(self, items: Iterable[T]) -> None:
        self.items = iter(items)
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self.error is not None:
            raise StopIteration
        try:
            return next(self.items)
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 (raised again once what was read is loaded)
            self.error = exc
            raise StopIteration from None


def _loaded(loading: tuple[T, Pending[R]]) -> tuple[T, R]:
    """A load's item and result once it is done, after freeing what finished batches left behind."""
    item, outcome = loading[0], loading[1].result()
    # Prefect's task engines hold each run's parameters and result in reference cycles (engine,
    # state, result record; PrefectHQ/prefect#14329), so a loaded batch's records (the pages'
    # text) go only when the cyclic collector makes a full pass, and those passes grow rarer as
    # the heap grows: over a 50,000-page backfill the flow process held up to 19 loaded batches
    # at once. One full pass per loaded batch keeps that to the batches in flight. It pauses this
    # process only (the extraction pool keeps working), ~35 ms a batch with the heap frozen.
    gc.collect()
    return item, outcome


# --- the stages of one batch --------------------------------------------------------------------

def prepare_batch(db: Path, records: list[Article], settings: Settings,
                  keep: Callable[[list[Article]], list[Article]] | None = None,
                  skip_known: bool = True) -> list[Article]:
    """Every stage before the load: records come back extracted and normalised, or finished.
    `keep` may finish records before the load (a backfill's date window); `skip_known=False`
    fetches URLs already stored (a revisit)."""
    records = skip_forgotten(records, forgotten_rules(db))  # `newsflow forget`: never requested again
    if skip_known:
        records = skip_known_urls(records, known_urls(db, records))
    records = fetch_batch(records, settings)  # WARC records are referenced in place: nothing to fetch
    records = normalise_batch(extract_batch(records, settings, db))
    return keep(records) if keep else records


def load_prepared(db: Path, run_id: str, records: list[Article],
                  partition: dict[str, Any] | None = None) -> dict[str, int]:
    """Load prepared records; the count of each final state. With `partition` (a `partitions`
    row) the partition is recorded as finished in the same transaction."""
    return dict(Counter(str(r.state) for r in load_batch(db, run_id, records, partition)))


# --- Prefect tasks (thin wrappers) -----------------------------------------------------------------
from prefect import task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402

prepare_batch_task = task(name="prepare-batch", cache_policy=NONE, retries=1, retry_delay_seconds=5)(prepare_batch)
load_batch_task = task(name="load-batch", cache_policy=NONE, retries=1, retry_delay_seconds=5)(load_prepared)
