"""A head start for one-off commands: Prefect's temporary server and the extraction workers start
side by side, while this process imports the pipeline.

With no Prefect API configured, a flow run asks Prefect for a client and Prefect starts a
temporary server then: this process first imports Prefect's whole server (~5 s of CPU here) only
to launch `uvicorn` in a subprocess, which imports it again and boots (~5 s) while this process
waits; the extraction workers start later still, with the first batch. `newsflow backfill` and
`ingest` spent ~10 s before their first batch that way (bench/throughput.py, `startup_s`).

Here, at the command's start, a child process (`python -m flows.startup PORT`) imports Prefect's
server while this process reads Prefect's settings. If they call for a temporary server (no API
URL, temporary server allowed: Prefect's own condition), the child is told to serve and boots
the same app the same way Prefect does (`prefect.server.api.server:create_app`, no UI, ephemeral,
on 127.0.0.1); otherwise it exits having only imported modules, and nothing else changes. Flow
runs then find it through `PREFECT_API_URL`. The worker pool starts meanwhile in a thread.

Written by hand because Prefect's launcher (`SubprocessASGIServer`) lives in the module whose
import is the cost saved; uv.lock pins Prefect and every CLI test runs through this path. The
child serves until its stdin closes, so it ends with this process even after a `kill -9`
(Prefect's own temporary server outlives a killed parent). If it fails to answer, Prefect
starts its own server as before.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

log = logging.getLogger(__name__)

PORT_IN_USE = 3  # uvicorn's exit code when its port was taken between our check and its bind
HEALTH_POLL_S = 0.1
GO = b"serve\n"


class TemporaryServer:
    """One Prefect server child for this process's flow runs; it ends when this process does."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.port = process, port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def launch(cls) -> TemporaryServer:
        """Start the child importing Prefect's server; it serves only after `serve()`."""
        port = _free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        process = subprocess.Popen([sys.executable, "-m", "flows.startup", str(port)], stdin=subprocess.PIPE, env=env)
        return cls(process, port)

    def serve(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(GO)
        self.process.stdin.flush()

    def wait_healthy(self, timeout: float) -> bool:
        """Whether the server answers its health check within `timeout` seconds."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:  # loopback: never via a proxy
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(HEALTH_POLL_S)
        return False

    def stop(self) -> None:
        """Close the child's stdin (it shuts down cleanly), kill it if it has not within 5 s."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # it already exited
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_server: TemporaryServer | None = None
_server_lock = threading.Lock()


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wants_temporary_server() -> bool:
    """Prefect's own condition for starting one: no API URL, temporary server allowed."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


def _start() -> TemporaryServer:
    server = TemporaryServer.launch()
    atexit.register(server.stop)
    return server


def _server_once() -> TemporaryServer | None:
    """This process's server, started on first use; None when Prefect should do as it does."""
    global _server
    with _server_lock:
        if _server is not None and _server.process.poll() is None:
            return _server
        if "prefect.server.api.server" in sys.modules:
            return None  # this process already runs flows through Prefect's own server
        try:
            candidate = _start()
        except OSError as exc:
            log.warning("could not start a Prefect server (%s); Prefect will start one", exc)
            return None
        if not _wants_temporary_server():  # read while the child imports
            candidate.stop()
            return None
        candidate.serve()
        _server = candidate
        return _server


def _ready(server: TemporaryServer, timeout: float) -> TemporaryServer | None:
    """The server once it answers (started again on another port if its port was taken)."""
    global _server
    for _ in range(3):
        if server.wait_healthy(timeout):
            return server
        if server.process.poll() != PORT_IN_USE:
            break
        with _server_lock:
            _server = server = _start()
            server.serve()
    server.stop()
    log.warning("the Prefect server started ahead did not answer; Prefect will start one")
    return None


@contextmanager
def head_start(workers: int, module: str) -> Iterator[None]:
    """Start the server, `workers` extraction processes and the import of `module` (the flow's)
    at once; flow runs inside the block use that server (which ends with this process)."""
    pool = threading.Thread(target=_start_pool, args=(workers,), name="newsflow-pool-start", daemon=True)
    pool.start()
    try:
        server = _server_once()
        importlib.import_module(module)
        if server is None:
            yield
            return
        from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
                                      PREFECT_UI_URL, temporary_settings)

        ready = _ready(server, float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        if ready is None:
            yield
            return
        # no UI URL: the server has no UI and ends with this process, so no "View at" link
        with temporary_settings(updates={PREFECT_API_URL: ready.api_url, PREFECT_UI_URL: ""}):
            yield
    finally:
        pool.join()


def _start_pool(workers: int) -> None:
    from tasks.extract import start_pool

    try:
        start_pool(workers)
    except Exception as exc:  # the first batch will start it again and report what fails
        log.debug("extraction pool did not start ahead: %s", exc)


# --- the child ----------------------------------------------------------------------------------

def _serve(port: int) -> None:
    """Import Prefect's server, serve it if told to, and stop when the parent's pipe closes."""
    import uvicorn

    import prefect.server.api.server  # noqa: F401  (the slow part, before the go-ahead)

    if sys.stdin.buffer.readline() != GO:
        return  # not wanted (or the parent is gone): nothing was served or written

    def end_with_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    threading.Thread(target=end_with_parent, daemon=True).start()
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
