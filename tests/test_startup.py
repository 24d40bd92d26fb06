"""flows/startup.py: the Prefect server started ahead of a command's flow run, and its end.

Each test runs a fresh Python process (no test harness: the head start is for one-off commands)
with its own PREFECT_HOME; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, sys, time
    import flows.startup as startup
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    @flow
    def noop():
        return 42

    with startup.head_start(1, "tasks.extract"):
        server = startup._server
        pool = []
        if sys.argv[1] != "look":
            import multiprocessing.forkserver
            from tasks import extract
            extract.start_pool(1)  # started ahead by head_start; this waits until it is up
            pool = [*extract._pool._processes, multiprocessing.forkserver._forkserver._forkserver_pid]
        print(json.dumps({"api": PREFECT_API_URL.value(), "child": server.process.pid if server else None,
                          "result": noop() if sys.argv[1] == "run" else None, "pool": pool}), flush=True)
        if sys.argv[1] == "hang":
            time.sleep(600)
""")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING", **extra}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too: it waits only for its (killed) parent to reap it
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_flow_runs_on_the_server_started_ahead_and_it_ends_with_the_command(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, "run"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["result"] == 42
    assert info["api"].startswith("http://127.0.0.1:") and info["api"].endswith("/api")
    assert info["child"] is not None
    assert _wait_gone(info["child"], 10), "the server outlived the command"
    assert len(info["pool"]) == 2 and all(_wait_gone(pid, 10) for pid in info["pool"]), "the extraction pool outlived the command"
    with pytest.raises(httpx.TransportError):
        httpx.get(info["api"] + "/health", timeout=2)
    # the flow run went to that server's database under this PREFECT_HOME
    assert (tmp_path / "prefect" / "prefect.db").exists()


def test_server_ends_when_its_command_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, "hang"], cwd=REPO, env=_env(tmp_path),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        info = json.loads(parent.stdout.readline())
        assert httpx.get(info["api"] + "/health", timeout=5).status_code == 200
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(info["child"], 30), "the server outlived a killed command"
        # the extraction worker and its forkserver too (they used to stay, ~200 MB a killed run)
        assert len(info["pool"]) == 2
        assert all(_wait_gone(pid, 30) for pid in info["pool"]), "the extraction pool outlived a killed command"
    finally:
        parent.kill()
        parent.wait()


def test_configured_api_url_is_left_alone(tmp_path: Path) -> None:
    # Nothing listens there and nothing is asked of it: the block only reports the setting.
    configured = "http://127.0.0.1:9/api"
    done = subprocess.run([sys.executable, "-c", SCRIPT, "look"], cwd=REPO, env=_env(tmp_path, PREFECT_API_URL=configured),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info == {"api": configured, "child": None, "result": None, "pool": []}
    assert not (tmp_path / "prefect" / "prefect.db").exists()


def test_child_serves_only_when_told(tmp_path: Path) -> None:
    # stdin closed before the go-ahead: the child imports, then exits without serving or writing
    child = subprocess.run([sys.executable, "-m", "flows.startup", "9"], cwd=REPO, env=_env(tmp_path),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert not (tmp_path / "prefect" / "prefect.db").exists()
