"""Machine settings from the environment (`NEWSFLOW_*`), built inside a flow or CLI call.

Never read at import time: a deployment's worker and a test each build their own.
Per-run choices (which sources, which database) are flow parameters instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import ByteSize, Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DB = Path("data/news.duckdb")
USER_AGENT = "newsflow/0.1 (news research crawler; +https://github.com/newsflow/newsflow)"
_BYTES = TypeAdapter(ByteSize)


def size_in_bytes(size: str) -> int:
    """A size such as 64MB or 1.5GiB in bytes, with DuckDB's units (MB = 10^6, MiB = 2^20)."""
    return int(_BYTES.validate_python(size))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSFLOW_", extra="ignore")

    db: Path = DEFAULT_DB
    raw_dir: Path = Path("data/raw")
    sources_file: Path = Path("data/sources.toml")

    # fetching
    user_agent: str = USER_AGENT
    # hosts or IP literals that may resolve to private/loopback addresses (tests, local demos)
    allow_private_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # PEM file of the certificate authorities to trust for https, in place of certifi's bundle
    # (an internal CA, a company proxy that inspects TLS); the environment's SSL_CERT_FILE is
    # not read, so that a run trusts what its settings say and nothing else
    ca_bundle: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = Field(60.0, description="total seconds per URL, redirects included")
    max_redirects: int = 5
    max_page_bytes: int = 10 * 1024 * 1024
    concurrency: int = 32
    per_host: int = 2
    host_delay: float = Field(1.0, description="minimum seconds between request starts to one host")
    retry_backoff: float = Field(1.0, description="base seconds of the exponential retry backoff")
    retry_after_cap: float = Field(120.0, description="longest Retry-After honoured; longer fails at once")
    # robots.txt and cross-process per-host pacing state (tasks/robots.py); next to the raw store
    # by default, so a test that points raw_dir at a temporary directory gets a fresh cache too
    cache_dir: Path = Field(default_factory=lambda data: Path(data["raw_dir"]).parent / "cache")
    obey_robots: bool = True
    robots_ttl: float = Field(86400.0, description="seconds a fetched robots.txt is trusted (Google: 24 h)")
    robots_error_ttl: float = Field(300.0, description="seconds an unavailable robots.txt keeps its host closed")
    crawl_delay_cap: float = Field(60.0, description="longest robots Crawl-delay honoured (Heritrix caps at 300)")

    # extraction
    extract_workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    extract_timeout: float = 30.0
    # Pages an extraction worker process extracts before the pool is replaced by fresh processes
    # (forked from the forkserver, which has trafilatura imported), between batches. Extraction
    # processes grow with the pages they have seen (trafilatura#216 reports ~1 MB a page in long
    # runs; here the workers' PSS rose from 253 to 290 MB over a 50,000-page backfill), so a
    # scheduled `serve` or a long backfill would otherwise keep the largest size its workers ever
    # reached. Not often: a fresh worker's first 100 pages took 0.5 s more CPU than the same
    # pages again (3.6 s against 3.1 s: what trafilatura and lxml set up on first use), its first
    # 300 pages 1.5 s more in one try and 2 s less in another (the machine's noise is as large):
    # under ~0.15 ms a page at 10,000. 0: never replaced.
    extract_worker_pages: int = Field(default=10_000, ge=0)
    min_words: int = 50  # fewer words of body text: not an article

    # Records per task run (two per batch: prepare and load). Records carry no HTML (workers read
    # it from the archive), so a batch is small; larger ones mean fewer Prefect task runs. At
    # 5,000 pages (bench/throughput.py, paired runs, 14:50 UTC) 500 against 200: backfill 176.2
    # and 174.7 pages/s against 161.0 and 168.7, ingest 128.1 against 124.6; peak memory alike.
    batch_size: int = Field(default=500, ge=1)  # 0 would batch nothing: every record left without a state
    # how long a writer or a query waits for another process to release the DuckDB file
    lock_wait: float = 30.0
    # `newsflow revisit`: the ages (hours since an article was first fetched) at which it is
    # fetched again to catch headline changes, corrections and edits: most happen within the first
    # day. Each age is tried once, at the first revisit run within twice that age (a daily revisit
    # run still makes the 24 h and 7 d ones); older articles are not revisited.
    revisit_after_hours: Annotated[tuple[float, ...], NoDecode] = (1.0, 6.0, 24.0, 168.0)
    revisit_limit: int = Field(default=5000, ge=0, description="articles a revisit run fetches at most (youngest first)")
    # A revisit asks for the page only if it changed (If-None-Match / If-Modified-Since with the
    # stored response's ETag / Last-Modified): a 304 costs the site no page and us no extraction.
    # Off, every revisit downloads the page (for a site whose validators lie).
    revisit_conditional: bool = True
    # DuckDB's memory for connections that write (its default is 80% of RAM). A run holds the
    # database open, and DuckDB keeps the blocks it read cached up to this limit, so the loading
    # process grew with the archive (+130 MB from 5k to 50k articles at 512MB); the load needs
    # little (batch-sized joins; larger operations spill to disk) and ran as fast at 128MB.
    # At 64MB DuckDB's cache stops growing by ~50,000 articles (the columns each batch's dedup
    # reads outgrow it: near-duplicate band keys and signatures, ~47 MB at 49,470 articles), and
    # a 50,000-page backfill peaked at 0.88 GB instead of 0.92-0.95 (bench/README.md), while a
    # 100-batch load ran ~20% slower (re-reading evicted blocks from the OS's page cache: ~5 s of
    # a 15-minute backfill). Not lower: at 48MB an automatic checkpoint could not pin a block
    # (DuckDB keeps ~33-44 MB of in-memory blocks for the tables' appends) and a FATAL error
    # invalidated the database. Batches larger than ~2,000 records get more:
    # `tasks.load.writer_memory_limit`. Read-only connections (`newsflow sql`) keep DuckDB's
    # default: they live for one query.
    duckdb_memory_limit: str = "64MB"
    # ... and while it builds the search index, which would otherwise take all of it (at 49,425
    # articles: +550 MB of RSS with 512MB, +216 MB with 128MB, in the same 19 s)
    duckdb_search_memory_limit: str = "128MB"
    # Articles loaded since the search index was built that a search scores on the fly (the newest
    # 4,940 of 100,000: a search took 1.3 s instead of 0.23 s here); past this, the next run
    # rebuilds the index over the whole archive (37 s at 100,000). 0: rebuilt at every run that loads.
    search_unindexed_max: int = Field(default=5000, ge=0)

    @field_validator("duckdb_memory_limit", "duckdb_search_memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        # Checked here, with the setting's name, rather than when a run first opens the database
        # (`tasks.load.writer_memory_limit` reads it in bytes).
        try:
            size_in_bytes(value)
        except ValidationError:
            raise ValueError(f"expected a size such as 512MB or 1GB, got {value!r}") from None
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _pem_file(cls, value: Path | None) -> Path | None:
        # Checked here, with the setting's name, rather than by the first https request of a run
        # (which also refuses a PEM file that does not parse: tasks.fetch._tls_context).
        if value is None:
            return value
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        if b"-----BEGIN CERTIFICATE-----" not in value.read_bytes():
            raise ValueError(f"{value} holds no PEM certificate")
        return value

    @field_validator("revisit_after_hours", mode="before")
    @classmethod
    def _split_hours(cls, value: object) -> object:
        if isinstance(value, str):  # NEWSFLOW_REVISIT_AFTER_HOURS=1,6,24,168
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value

    @field_validator("revisit_after_hours")
    @classmethod
    def _ascending_hours(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(h <= 0 for h in value) or list(value) != sorted(set(value)):
            raise ValueError(f"expected increasing positive hours such as 1,6,24,168, got {','.join(map(str, value))}")
        return value

    @field_validator("allow_private_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower().strip("[]") for h in value.split(",") if h.strip())
        return value
