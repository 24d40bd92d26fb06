"""Shared fixtures: a fresh database, a session-wide Prefect harness, repo paths."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
import functools
from pathlib import Path
from types import ModuleType

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


@contextmanager
def held_by_another_process(db: Path, seconds: int = 60) -> Iterator[None]:
    """`db` open read-write in another process for the block (DuckDB then locks every other one out)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep({seconds})"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def load_script(path: Path, name: str) -> ModuleType:
    """A script of the repository (bench/, data/sample/: not package modules) imported by path as
    module `name`, registered in sys.modules: dataclasses look their module up while defined."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sample_pages() -> list[dict]:
    """The bundled sample's manifest entries."""
    import json

    return json.loads((SAMPLE / "manifest.json").read_text())["pages"]


def loopback_path(url: str) -> str:
    """Where a sample page is served on the loopback site: /<host><path>."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"/{parts.netloc}{parts.path}"


def rss(items: list[tuple[str, str]]) -> bytes:
    """A minimal RSS 2.0 feed of (url, title) items."""
    from xml.sax.saxutils import escape

    entries = "".join(f"<item><title>{escape(t)}</title><link>{escape(u)}</link><guid>{escape(u)}</guid></item>"
                      for u, t in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
            f"<link>http://127.0.0.1/</link><description>d</description>{entries}</channel></rss>").encode()


@pytest.fixture
def sample_site() -> Iterator:
    """The sample's pages on a loopback server, with a feed of its articles at /feed.xml."""
    from tests.servers import serve

    routes: dict = {}
    for page in sample_pages():
        body = (SAMPLE / page["file"]).read_bytes()
        content_type = "text/html" if page["charset"] != "utf-8" else "text/html; charset=utf-8"
        routes[loopback_path(page["url"])] = (200, {"Content-Type": content_type}, body)
    with serve(routes) as site:
        articles = [p for p in sample_pages() if p["kind"] == "article"]
        routes["/feed.xml"] = (200, {"Content-Type": "application/rss+xml"},
                               rss([(site.url(loopback_path(p["url"])), p["title"]) for p in articles]))
        yield site


SAMPLE_ARTICLES = 35  # data/sample: 38 pages in the WARC, 3 of them not articles


@functools.cache
def ingest_sample(root: Path) -> Path:
    """The sample ingested by the real flow into `root/news.duckdb` (cached: once per session)."""
    from flows.ingest import ingest

    db = root / "news.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEWSFLOW_RAW_DIR", str(root / "raw"))
        mp.setenv("NEWSFLOW_EXTRACT_WORKERS", "2")
        mp.chdir(REPO)  # data/sources.toml points at data/sample/sample.warc.gz, relative
        ingest(db=str(db), sources_file=str(REPO / "data" / "sources.toml"))
    return db


@pytest.fixture(scope="session")
def sample_db(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample, loaded once per test session (shared with tests/test_cli.py)."""
    return ingest_sample(tmp_path_factory.getbasetemp() / "sample")
