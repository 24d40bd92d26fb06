"""Shared fixtures: a fresh database, a session-wide Prefect harness, repo paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks  # noqa: F401  (Prefect's offline defaults before prefect is imported)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    """Path of a database file that does not exist yet."""
    return tmp_path / "news.duckdb"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (loopback, SQLite) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    # The ephemeral server takes 8-17 s to start on this 2-core machine.
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def newsflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for a test run: loopback allowed, no politeness delay, raw store in tmp."""
    monkeypatch.setenv("NEWSFLOW_ALLOW_PRIVATE_HOSTS", "127.0.0.1,localhost")
    monkeypatch.setenv("NEWSFLOW_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("NEWSFLOW_HOST_DELAY", "0")
    monkeypatch.setenv("NEWSFLOW_EXTRACT_WORKERS", "2")
    monkeypatch.delenv("NEWSFLOW_DB", raising=False)
    return tmp_path


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
