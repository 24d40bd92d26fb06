"""Per-host pacing that holds across processes on one machine: slots in flight and spaced starts.

Two rules per host (a host name or IP literal, without the port: one publisher's machine):

* at most `per_host` requests in flight: `per_host` slot files `<host>.slot<i>`; a request holds
  an exclusive `fcntl.flock` on one of them from connect to the last byte of the body;
* request starts at least `delay` seconds apart: the state file `<host>.last` holds the time of
  the latest start; under a short flock a request about to start reads it and either writes
  `now` and goes, or learns how long to sleep before trying again (no lock held while asleep).

Every concurrent flow run, CLI call and worker process on the machine sees the same files (under
`settings.cache_dir / "hosts"`), so two runs fetching one site share its budget. A process that
dies releases its locks with its file descriptors, so nothing is ever left stuck.

Why not Prefect global concurrency limits: they live in a Prefect server's database, and newsflow
runs in Prefect's ephemeral mode by default, where every CLI run starts its own temporary server
that the other runs cannot see. Why not DuckDB: fetching must not write the database (one writer,
tasks/load.py), and DuckDB lets only one process open a file for writing at a time. Why fcntl by
hand: filelock offers one lock per file, not N slots plus a shared timestamp; the few lines here are
stdlib. POSIX only (fcntl), like the process pool of tasks/extract.py on Linux.

With several machines the same two rules map onto a shared store: per host a Prefect global
concurrency limit named `host:<host>` with `limit=per_host` taken with `concurrency(...)` around a
request (the slots), and a GCL with `slot_decay_per_second=1/delay` taken with `rate_limit(...)`
(the spacing), against a real Prefect server; or Redis (`SET next NX PX`, a counter per host).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

# How often a request waiting for a slot held by another process looks again.
POLL_SECONDS = 0.02
# A last start this far in the future is a stale file (the clock stepped back): ignored.
MAX_AHEAD_SECONDS = 60.0


class Pacer:
    """The per-host slots and spacing of one process, shared with every other process via files."""

    def __init__(self, directory: Path, per_host: int) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._per_host = max(1, per_host)
        # Inside one process only `per_host` coroutines per host poll the files at all.
        self._local: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of the host's `per_host` slots (shared by every process) for the block."""
        key = host_key(host)
        async with self._local.setdefault(key, asyncio.Semaphore(self._per_host)):
            fd = await self._take_slot(key)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                if self._others_waiting(key):
                    # Our next coroutine would take the freed slot at once, while another process
                    # only looks every POLL_SECONDS: leave it the slot, or it starves until we finish.
                    await asyncio.sleep(2 * POLL_SECONDS)

    async def space(self, host: str, delay: float) -> None:
        """Return once `delay` seconds have passed since the host's previous start, claiming now as its start.

        Call it last before sending: a start is claimed when it happens, not reserved ahead, so a
        request that is late (busy loop, slow connect) never shortens the gap to the next one.
        """
        key = host_key(host)
        while (wait := self._claim_start(key, delay)) > 0:
            await asyncio.sleep(wait)

    async def _take_slot(self, key: str) -> int:
        """A locked descriptor of one of the host's slot files, polling while all are held."""
        while True:
            for i in range(self._per_host):
                fd = os.open(self._dir / f"{key}.slot{i}", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return fd
            self._waiting(key).touch()  # tell the holders that someone else is waiting
            await asyncio.sleep(POLL_SECONDS)

    def _waiting(self, key: str) -> Path:
        return self._dir / f"{key}.waiting"

    def _others_waiting(self, key: str) -> bool:
        """Did some process fail to get a slot of this host in the last few polls?"""
        try:
            return time.time() - self._waiting(key).stat().st_mtime < 3 * POLL_SECONDS
        except OSError:
            return False

    def _claim_start(self, key: str, delay: float) -> float:
        """Record now as the host's last start if `delay` has passed since the previous; else seconds left."""
        fd = os.open(self._dir / f"{key}.last", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: microseconds
            now = time.time()  # wall clock: the one clock every process reads alike
            last = _read_float(os.pread(fd, 64, 0))
            if last - now > MAX_AHEAD_SECONDS:
                last = 0.0
            wait = last + delay - now
            if wait > 0:
                return wait
            # Fixed width, so each write covers the last one whole: no ftruncate (a syscall that
            # cost ~0.2 ms a request here, more than the rest of the claim).
            os.pwrite(fd, f"{now:024.6f}".encode(), 0)
            return 0.0
        finally:
            os.close(fd)  # closing releases the lock


def host_key(host: str) -> str:
    """A file-name-safe, collision-free key for a host: readable prefix plus a hash."""
    host = host.lower().rstrip(".")
    readable = re.sub(r"[^a-z0-9.-]", "_", host)[:60]
    return f"{readable}-{hashlib.sha256(host.encode()).hexdigest()[:12]}"


def _read_float(data: bytes) -> float:
    try:
        return float(data.decode("ascii").strip() or 0)
    except (UnicodeDecodeError, ValueError):
        return 0.0  # a torn or foreign file: no reservation
