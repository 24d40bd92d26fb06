"""tasks/pipeline.py: batches overlap (prepare ahead of load), loads stay in order, nothing is left running."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasks.pipeline import pipelined
from tasks.records import batches, batches_with_last


class Journal:
    """What happened, in order, across threads."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._lock = threading.Lock()

    def note(self, event: str) -> None:
        with self._lock:
            self.events.append(event)


def test_loads_run_in_order_one_at_a_time_while_the_next_batches_prepare() -> None:
    journal, loading = Journal(), threading.Lock()

    def prepare(n: int) -> int:
        journal.note(f"prepare {n} start")
        time.sleep(0.05 if n % 2 else 0.01)  # uneven: a later prepare may finish first
        journal.note(f"prepare {n} end")
        return n * 10

    def load(n: int, prepared: int) -> int:
        assert loading.acquire(blocking=False), "two loads at once"
        try:
            journal.note(f"load {n} start")
            time.sleep(0.03)
            journal.note(f"load {n} end")
            return prepared + 1
        finally:
            loading.release()

    with ThreadPoolExecutor(4) as threads:
        results = list(pipelined(range(6), lambda n: threads.submit(prepare, n),
                                 lambda n, p: threads.submit(load, n, p)))

    assert results == [(n, n * 10 + 1) for n in range(6)]
    loads = [e for e in journal.events if e.startswith("load") and e.endswith("start")]
    assert loads == [f"load {n} start" for n in range(6)]
    for n in range(6):  # a load starts after its prepare and after the previous load ended
        assert journal.events.index(f"load {n} start") > journal.events.index(f"prepare {n} end")
        if n:
            assert journal.events.index(f"load {n} start") > journal.events.index(f"load {n - 1} end")
    # overlap: the next batch was being prepared while this one loaded
    assert any(journal.events.index(f"prepare {n + 1} start") < journal.events.index(f"load {n} end")
               for n in range(5))


def test_an_error_waits_for_the_work_in_flight_and_then_surfaces() -> None:
    finished: list[int] = []

    def prepare(n: int) -> int:
        if n == 2:
            raise ValueError("bad batch 2")
        time.sleep(0.05)
        finished.append(n)
        return n

    with ThreadPoolExecutor(4) as threads:
        seen = []
        with pytest.raises(ValueError, match="bad batch 2"):
            for n, _ in pipelined(range(5), lambda n: threads.submit(prepare, n),
                                  lambda n, p: threads.submit(lambda: p)):
                seen.append(n)
        # batch 3 was already being prepared when 2 failed: it is waited for, not abandoned
        assert 3 in finished
    assert seen == [0, 1]  # loaded before the failure; nothing after it is loaded
    assert gc.get_freeze_count() == 0, "the heap was left frozen"


def test_a_source_that_fails_midway_has_everything_read_before_it_loaded_then_the_error() -> None:
    def source():  # a WARC cut short: five good batches, then the damage
        yield from range(5)
        raise OSError("truncated")

    loaded: list[int] = []
    with ThreadPoolExecutor(4) as threads:
        with pytest.raises(OSError, match="truncated"):
            for n, _ in pipelined(source(), lambda n: threads.submit(lambda: n),
                                  lambda n, p: threads.submit(loaded.append, p)):
                pass
    # the batches still being prepared when the source failed were loaded too, in order
    assert loaded == [0, 1, 2, 3, 4]
    assert gc.get_freeze_count() == 0, "the heap was left frozen"


class CyclicFuture:
    """Done work whose value sits in a reference cycle, as a Prefect task run's parameters and
    result do (engine <-> state <-> result record): only the cyclic collector frees it."""

    def __init__(self, value: object) -> None:
        self.value, self.myself = value, self

    def result(self) -> object:
        return self.value


class Record:
    pass


def test_a_loaded_batch_is_freed_at_once_though_held_in_a_reference_cycle() -> None:
    records: dict[int, list[weakref.ref]] = {}

    def prepare(n: int) -> CyclicFuture:
        batch = [Record() for _ in range(3)]
        records[n] = [weakref.ref(r) for r in batch]
        return CyclicFuture(batch)

    def load(n: int, batch: list[Record]) -> CyclicFuture:
        return CyclicFuture((len(batch), batch))  # a load's run holds its parameters too

    loaded = []
    frozen_before = gc.get_freeze_count()
    gc.disable()  # the collector's own passes come at times no test can know
    try:
        for n, (count, _) in pipelined(range(6), prepare, load):
            loaded.append((n, count))
            still_held = [m for m in range(n) if any(ref() is not None for ref in records[m])]
            assert not still_held, f"batches {still_held} still in memory when batch {n} was loaded"
    finally:
        gc.enable()
    assert loaded == [(n, 3) for n in range(6)]
    assert gc.get_freeze_count() == frozen_before, "the heap was left frozen"


def test_every_prefect_task_has_its_own_name() -> None:
    """Task runs are read by name in Prefect's UI and API: two tasks under one name would mix
    a backfill's prepares with an ingest's."""
    import importlib
    import pkgutil

    from prefect import Task

    import tasks

    owners: dict[str, dict[int, str]] = {}  # name -> the task objects (a task imported elsewhere is one object)
    for module_info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{module_info.name}")
        for attribute, value in vars(module).items():
            if isinstance(value, Task):
                owners.setdefault(value.name, {}).setdefault(id(value), f"{module.__name__}.{attribute}")
    assert "load-batch" in owners, "the task modules' tasks were not found"
    shared = {name: sorted(where.values()) for name, where in owners.items() if len(where) > 1}
    assert not shared, f"task names used twice: {shared}"


def _counted(n: int, read: list[int], fail: bool = False):
    for i in range(n):
        read.append(i)
        yield i
    if fail:
        raise OSError("cut short")


def test_batches_read_one_item_ahead_not_a_batch() -> None:
    read: list[int] = []
    batched = batches_with_last(_counted(10, read), 4)
    assert next(batched) == ([0, 1, 2, 3], False)
    assert len(read) == 5  # the first batch goes out once one more item is known to exist
    assert list(batched) == [([4, 5, 6, 7], False), ([8, 9], True)]
    assert list(batches_with_last(_counted(8, []), 4)) == [([0, 1, 2, 3], False), ([4, 5, 6, 7], True)]
    assert list(batches_with_last([], 4)) == []


@pytest.mark.parametrize("n", [6, 8])  # the failure inside a batch, and right after a full one
def test_batches_keep_what_was_read_before_the_source_failed(n: int) -> None:
    got: list[list[int]] = []
    with pytest.raises(OSError, match="cut short"):
        for batch in batches(_counted(n, [], fail=True), 4):
            got.append(batch)
    assert [i for batch in got for i in batch] == list(range(n))
    flags = []
    with pytest.raises(OSError):
        for _, last in batches_with_last(_counted(n, [], fail=True), 4):
            flags.append(last)
    assert flags == [False, False]  # none is the last: the source did not end, it failed
