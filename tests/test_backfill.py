"""Backfills: WARC files the tests write, date and domain filters, re-extraction in place,
resuming after SIGKILL, a truncated WARC failing only its partition, `newsflow raw`."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from typer.testing import CliRunner
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tests.conftest import REPO, SAMPLE, loopback_path, sample_pages
from tasks import extract
from tasks.backfill import (BackfillRequestError, Request, Window, apply_window, clean_domains, on_domains,
                            warc_partitions)
from tasks.records import Article, Extracted, SourceKind, State

CRAWLED = "2026-11-25T12:00:00Z"  # after every sample page's date, so no date looks like the future
ARTICLES = [p for p in sample_pages() if p["kind"] == "article"]


_PARA = "<p>" + " ".join(["The harbour council met on Tuesday to discuss the new ferry terminal and its funding."] * 3) + "</p>"
_TABLE = ("<table><tr><th>Route</th><th>Winter sailings</th></tr><tr><td>Skerrin to Carrow</td>"
          "<td>Four a day, down from six</td></tr><tr><td>Carrow to Holm</td><td>Two a day</td></tr></table>")
# A page with a table: the `precision` and `precision-notables` profiles extract it differently
# (the sample's pages have none, so every profile gives them the same text).
TABLE_PAGE = {"url": "https://www.harbourgazette.example/2026/11/20/ferry-terminal-approved", "kind": "article",
              "charset": "utf-8", "published": "2026-11-20T09:00:00+00:00",
              "html": f"""<html lang="en"><head><title>Ferry terminal approved</title>
<meta property="article:published_time" content="2026-11-20T09:00:00+00:00"></head><body><article>
<h1>Ferry terminal approved</h1>{_PARA * 2}{_TABLE}{_PARA * 3}</article></body></html>""".encode()}


def write_warc(path: Path, pages: list[dict[str, Any]], base: str = "") -> Path:
    """A gzipped WARC of sample pages (warcinfo, then request + response per page), as a crawler writes it.

    Written with warcio directly, not through the project's archive, so the backfill reads a
    file made independently of it. `base` replaces the scheme and host (a loopback site)."""
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for page in pages:
            url = base + loopback_path(page["url"]) if base else page["url"]
            body = page["html"] if "html" in page else (SAMPLE / page["file"]).read_bytes()
            content_type = "text/html; charset=utf-8" if page["charset"] == "utf-8" else "text/html"
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            request = StatusAndHeaders(f"GET {urlsplit(url).path} HTTP/1.1", [("Host", urlsplit(url).netloc)],
                                       is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=request,
                                                          warc_headers_dict={"WARC-Date": CRAWLED}))
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=http, warc_headers_dict={"WARC-Date": CRAWLED}))
    return path


def rows(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def articles_table(db: Path) -> list[tuple[Any, ...]]:
    """The articles table, minus the run that first loaded each row (a new id every run)."""
    return rows(db, "SELECT * EXCLUDE (first_run_id) FROM articles ORDER BY article_id")


@pytest.fixture
def env(newsflow_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "8")
    return newsflow_env


@pytest.fixture
def three_warcs(tmp_path: Path) -> list[Path]:
    """Every sample page, spread over three WARC files (one partition each)."""
    pages = sample_pages()
    folder = tmp_path / "warcs"
    folder.mkdir()
    return [write_warc(folder / f"CC-NEWS-2026112{i}-0000{i}.warc.gz", pages[i::3]) for i in range(3)]


@pytest.fixture(scope="module")
def backfilled(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One database backfilled from a WARC of every sample page, shared by the read-only tests."""
    from flows.backfill import backfill

    folder = tmp_path_factory.mktemp("backfilled")
    warc = write_warc(folder / "sample.warc.gz", [*sample_pages(), TABLE_PAGE])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEWSFLOW_EXTRACT_WORKERS", "2")
        mp.setenv("NEWSFLOW_RAW_DIR", str(folder / "raw"))
        backfill(warcs=[str(warc)], db=str(folder / "news.duckdb"))
    yield folder / "news.duckdb", warc


# --------------------------------------------------------------------------- plain functions

def test_window_keeps_whole_days_and_marks_the_rest() -> None:
    window = Window(date(2026, 11, 10), date(2026, 11, 12))
    assert window.admits(datetime(2026, 11, 10, tzinfo=UTC))
    assert window.admits(datetime(2026, 11, 12, 23, 59, tzinfo=UTC))
    assert not window.admits(datetime(2026, 11, 13, tzinfo=UTC))
    page = Extracted(text="t")
    records = [Article(url=f"https://a.example/{i}", source="s", source_kind=SourceKind.WARC, extracted=page,
                       published_at=when) for i, when in
               enumerate([datetime(2026, 11, 11, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC), None])]
    kept = apply_window(records, window)
    assert [(r.state, r.reason) for r in kept] == [(None, None), (State.SKIPPED, "out-of-range"),
                                                   (State.SKIPPED, "no-date")]
    assert apply_window(records, Window()) == records


def test_domain_filter_takes_subdomains_not_lookalikes() -> None:
    domains = clean_domains(["https://www.Kestrelnews.example/", "harbourgazette.example"])
    assert domains == ("harbourgazette.example", "kestrelnews.example")
    assert on_domains("https://www.kestrelnews.example/a", domains)
    assert on_domains("https://m.harbourgazette.example/a", domains)
    assert not on_domains("https://notkestrelnews.example/a", domains)
    assert on_domains("https://anything.example/", ())


@pytest.mark.parametrize("request_, message", [
    (Request(), "nothing to backfill"),
    (Request(warcs=("a",), reextract=True), "--reextract"),
    (Request(sitemaps=("https://a.example/s.xml",)), "needs --since and --until"),
    (Request(warcs=("a",), window=Window(date(2026, 2, 1), date(2026, 1, 1))), "after --until"),
])
def test_bad_requests_are_refused(request_: Request, message: str) -> None:
    with pytest.raises(BackfillRequestError, match=message):
        request_.check()


def test_a_glob_is_one_partition_per_file_and_keys_carry_the_filters(three_warcs: list[Path]) -> None:
    glob = str(three_warcs[0].parent / "CC-NEWS-*.warc.gz")
    parts = warc_partitions(glob, Request(warcs=(glob,)).fingerprint())
    assert [p.location for p in parts] == [str(p) for p in sorted(three_warcs)]
    assert all(p.size == os.path.getsize(p.location) for p in parts)
    other = Request(warcs=(glob,), domains=("kestrelnews.example",)).fingerprint()
    assert {p.key for p in parts}.isdisjoint(p.key for p in warc_partitions(glob, other))


# --------------------------------------------------------------------------- flows

def test_warc_backfill_gives_the_texts_ingest_gives(prefect_harness: None, env: Path, sample_site: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Acceptance 1: a WARC written independently of newsflow, of pages `ingest` fetches from a server."""
    from flows.backfill import backfill

    monkeypatch.setenv("NEWSFLOW_PER_HOST", "8")  # every sample host is one loopback server here
    from flows.ingest import ingest

    base = site_base(sample_site)
    urls = [base + loopback_path(p["url"]) for p in sample_pages()]
    ingest(urls=urls, db=str(env / "ingest.duckdb"))
    warc = write_warc(env / "crawl.warc.gz", sample_pages(), base=base)
    summary = backfill(warcs=[str(warc)], db=str(env / "backfill.duckdb"))

    ingested = dict(rows(env / "ingest.duckdb", "SELECT url, text FROM articles"))
    backfilled = dict(rows(env / "backfill.duckdb", "SELECT url, text FROM articles"))
    assert backfilled == ingested
    assert {base + loopback_path(p["url"]) for p in ARTICLES} <= set(backfilled)
    assert summary["results"][0]["status"] == "done" and summary["results"][0]["records"] == len(sample_pages())
    # every record ends in one state; raw pages are read in place from the crawl's WARC
    assert rows(env / "backfill.duckdb", "SELECT count(*), count(DISTINCT url) FROM fetches") == [(38, 38)]
    assert rows(env / "backfill.duckdb", "SELECT DISTINCT raw_path FROM articles") == [(str(warc.resolve()),)]


def site_base(site: Any) -> str:
    return site.url("/").rstrip("/")


def test_dates_filter_on_the_published_date_not_the_crawl_date(prefect_harness: None, env: Path,
                                                               three_warcs: list[Path]) -> None:
    from flows.backfill import backfill

    db = env / "news.duckdb"
    backfill(warcs=[str(p) for p in three_warcs], since=date(2026, 11, 10), until=date(2026, 11, 12), db=str(db))
    published = [d for (d,) in rows(db, "SELECT published_at FROM articles")]
    expected = [p for p in ARTICLES if "2026-11-10" <= _utc_day(p["published"]) <= "2026-11-12"]
    assert len(published) == len(expected) > 0
    assert all(date(2026, 11, 10) <= d.astimezone(UTC).date() <= date(2026, 11, 12) for d in published)
    states = dict(rows(db, "SELECT coalesce(reason, state), count(*) FROM fetches GROUP BY ALL"))
    assert states["out-of-range"] == len(ARTICLES) - len(expected)
    assert sum(states.values()) == len(sample_pages())  # every record accounted for


def _utc_day(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).date().isoformat()


def test_domain_filter_runs_before_extraction(prefect_harness: None, env: Path, three_warcs: list[Path]) -> None:
    from flows.backfill import backfill

    db = env / "news.duckdb"
    summary = backfill(warcs=[str(p) for p in three_warcs], domains=["harbourgazette.example"], db=str(db))
    assert extract._pool is None  # the workers went once the batches were done, before the index build
    harbour = [p for p in sample_pages() if "harbourgazette" in p["url"]]
    assert {d for (d,) in rows(db, "SELECT DISTINCT domain FROM articles")} == {"harbourgazette.example"}
    assert rows(db, "SELECT count(*) FROM fetches") == [(len(harbour),)]
    assert sum(r["filtered"] for r in summary["results"]) == len(sample_pages()) - len(harbour)
    assert rows(db, "SELECT sum(filtered), sum(records) FROM partitions") == [(38 - len(harbour), 38)]


def test_a_truncated_warc_fails_only_its_partition_and_a_rerun_does_only_that(
        prefect_harness: None, env: Path, three_warcs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.backfill import backfill

    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "4")  # the broken file's 13 pages span four batches
    broken = three_warcs[1]
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) - 700])  # cut inside the last record, as an interrupted download is
    db = env / "news.duckdb"
    summary = backfill(warcs=[str(p) for p in three_warcs], db=str(db))
    # every record before the damage has its state, the ones of the batch it cut short included
    cut = sample_pages()[1::3][-1]["url"]
    assert rows(db, "SELECT count(*), count(*) FILTER (WHERE url = ?) FROM fetches", [cut]) == [
        (len(sample_pages()) - 1, 0)]
    status = {r["partition"]: (r["status"], r["reason"]) for r in summary["results"]}
    assert status[f"warc:{broken.resolve()}"][0] == "failed"
    assert "truncated" in status[f"warc:{broken.resolve()}"][1]
    assert [s for s, _ in status.values()].count("done") == 2
    assert rows(db, "SELECT status, reason LIKE '%truncated%' FROM partitions WHERE location = ?",
                [str(broken.resolve())]) == [("failed", True)]
    assert rows(db, "SELECT status FROM runs") == [("failed",)]

    broken.write_bytes(data)  # the file is whole again: the rerun does that partition only
    again = backfill(warcs=[str(p) for p in three_warcs], db=str(db))
    assert again["skipped_finished"] == 2 and [r["status"] for r in again["results"]] == ["done"]
    assert rows(db, "SELECT count(*) FROM articles") == [(len(ARTICLES),)]


def test_rerunning_a_finished_backfill_does_nothing(backfilled: tuple[Path, Path], env: Path) -> None:
    from flows.backfill import backfill

    db, warc = backfilled
    before = articles_table(db)
    summary = backfill(warcs=[str(warc)], db=str(db))
    assert summary["results"] == [] and summary["skipped_finished"] == 1
    assert articles_table(db) == before


def test_raw_prints_the_archived_page(backfilled: tuple[Path, Path]) -> None:
    from flows.cli import app
    import flows.cli_backfill  # noqa: F401  (registers the commands)

    db, _ = backfilled
    ((article_id, url),) = rows(db, "SELECT article_id, url FROM articles WHERE domain = 'severny-vestnik.example'")
    result = CliRunner().invoke(app, ["raw", article_id, "--db", str(db), "--headers"])
    assert result.exit_code == 0, result.output
    page = next(p for p in sample_pages() if p["url"] == url)
    assert (SAMPLE / page["file"]).read_bytes().decode(page["charset"]) in result.output  # windows-1251, decoded
    assert result.output.startswith(f"200 {url}")
    missing = CliRunner().invoke(app, ["raw", "0000", "--db", str(db)])
    assert missing.exit_code != 0 and "no article 0000" in missing.output


def test_backfill_command_refuses_bad_arguments() -> None:
    from flows.cli import app
    import flows.cli_backfill  # noqa: F401

    result = CliRunner().invoke(app, ["backfill", "--sitemap", "https://a.example/s.xml", "--since", "2026-11-01"])
    assert result.exit_code == 2 and "needs --since and --until" in result.output
    assert CliRunner().invoke(app, ["backfill", "--since", "1 Nov"]).exit_code == 2


def test_reextract_changes_only_what_the_new_extractor_changes(
        backfilled: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acceptance 3: first with the same extractor (nothing changes), then with another trafilatura profile."""
    import shutil

    import tasks.backfill
    import tasks.extract
    from flows.backfill import backfill

    db = tmp_path / "news.duckdb"
    shutil.copy(backfilled[0], db)
    before = {r[0]: r for r in articles_table(db)}
    same = backfill(reextract=True, db=str(db))
    assert sum(r.get("changed", 0) for r in same["results"]) == 0
    assert {r[0]: r for r in articles_table(db)} == before

    # "Changing an extraction setting": tables dropped (the `precision-notables` profile). It is
    # applied in this process: a patched module would not reach the extraction worker processes.
    monkeypatch.setattr(tasks.extract, "EXTRACTOR_VERSION", f"trafilatura-{PROFILE}")
    monkeypatch.setattr(tasks.backfill, "extract_batch", _extract_with_profile(PROFILE))
    summary = backfill(reextract=True, db=str(db))
    changed = sum(r.get("changed", 0) for r in summary["results"])
    after = {r[0]: r for r in articles_table(db)}
    assert set(after) == set(before)  # same article_ids, none added or lost
    columns = [c for (c,) in rows(db, "SELECT name FROM pragma_table_info('articles') WHERE name <> 'first_run_id'")]
    version = columns.index("extractor_version")
    touched = {a for a in after if after[a] != before[a]}
    assert len(touched) == changed > 0
    assert all(after[a][version] == f"trafilatura-{PROFILE}" for a in touched)
    assert all(after[a][version] != f"trafilatura-{PROFILE}" for a in set(after) - touched)
    # what changed is exactly what the recall profile extracts differently
    expected = _texts_with_profile(db, PROFILE)
    text = columns.index("text")
    assert touched == {a for a in before if before[a][text] != expected[a]}
    assert all(after[a][text] == expected[a] for a in after)


PROFILE = "precision-notables"


def _extract_with_profile(profile: str) -> Any:
    from tasks.archive import read_raw
    from tasks.extract import decode_html, extract_page

    def extract(records: list[Article], settings: Any, db: Any = None) -> list[Article]:
        out = []
        for r in records:
            response = read_raw(r.raw)
            page = extract_page(decode_html(response.body, response.header("content-type")), r.url, profile)
            page = page and Extracted(**{**{f: getattr(page, f) for f in page.__slots__},
                                         "extractor_version": f"trafilatura-{profile}"})
            out.append(r.replace(extracted=page) if page else r.finish(State.NOT_ARTICLE, "no-text"))
        return out
    return extract


def _texts_with_profile(db: Path, profile: str) -> dict[str, str]:
    from tasks.extract import decode_html, extract_page

    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute("SELECT article_id, url, raw_path, raw_offset, raw_length FROM articles").fetchall()
    from tasks.archive import read_raw
    from tasks.records import RawRef

    texts = {}
    for article_id, url, *ref in found:
        response = read_raw(RawRef(*ref))
        texts[article_id] = extract_page(decode_html(response.body, response.header("content-type")), url, profile).text
    return texts


def _task_runs(flow_run_id: str) -> Counter[str]:
    """Task runs of one flow run by task name, once the server has recorded them all (Prefect 3
    records task runs from events, a moment after they finish): read until two reads agree."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs_of = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    last: Counter[str] | None = None
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(flow_run_filter=runs_of, limit=200)  # the server's most
            assert len(found) < 200, "more task runs than one read returns"
            # a run is named after its task plus a short random suffix: "load-batch-7f3"
            counts = Counter(run.name.rsplit("-", 1)[0] for run in found)
            if counts == last or time.monotonic() > deadline:
                return counts
            last = counts
            time.sleep(1.5)


def test_task_runs_grow_with_batches_not_with_articles(prefect_harness: None, env: Path, three_warcs: list[Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 7: a batch is two task runs (prepare, load) and a run a fixed few more, whatever the
    batches hold: the same 38 pages in batches of 4 and of 64, counted on Prefect's server."""
    from flows.backfill import backfill

    per_warc = [len(sample_pages()[i::3]) for i in range(3)]  # as `three_warcs` spreads them
    counted = {}
    for size in (4, 64):
        monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", str(size))
        result = backfill(warcs=[str(p) for p in three_warcs], db=str(env / f"batches-of-{size}.duckdb"))
        batches = sum(max(1, -(-n // size)) for n in per_warc)  # a partition's last batch may be short
        runs = _task_runs(result["run_id"])
        assert runs["backfill-prepare"] == runs["load-batch"] == batches, (size, runs)
        counted[size] = runs
    small, large = counted[4], counted[64]
    # everything that is not a batch's runs once per run (start, plan, finish, search index)
    fixed = lambda runs: {k: v for k, v in runs.items() if k not in ("backfill-prepare", "load-batch")}  # noqa: E731
    assert fixed(small) == fixed(large) and all(v == 1 for v in fixed(small).values()), counted
    assert small.total() - large.total() == 2 * (small["load-batch"] - large["load-batch"]) > 0
    assert large.total() < sum(per_warc)  # fewer task runs than articles: none per article


def test_killed_backfill_rerun_equals_an_uninterrupted_run(prefect_harness: None, env: Path,
                                                           three_warcs: list[Path]) -> None:
    """Acceptance 2: SIGKILL at a random batch of a subprocess's backfill, rerun, compare."""
    from prefect.settings import PREFECT_API_URL

    from flows.backfill import backfill

    warcs = [str(p) for p in three_warcs]
    clean, killed = env / "clean.duckdb", env / "killed.duckdb"
    backfill(warcs=warcs, db=str(clean))

    environment = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_LOGGING_LEVEL": "INFO",
                   "NEWSFLOW_EXTRACT_WORKERS": "1", "NEWSFLOW_BATCH_SIZE": "4", "PYTHONUNBUFFERED": "1"}
    code = f"from flows.backfill import backfill; backfill(warcs={warcs!r}, db={str(killed)!r})"
    kill_after = random.Random(os.getpid()).randint(1, 8)  # of 10 batches
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = 0
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "load-batch" in line and "Finished in state" in line:
                seen += 1
                if seen == kill_after:
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own extraction workers, if any outlived it
        except ProcessLookupError:
            pass
    assert seen == kill_after, "the backfill ended before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    partial = rows(killed, "SELECT count(*) FROM articles")[0][0]
    assert 0 < partial < len(ARTICLES)

    backfill(warcs=warcs, db=str(killed))
    assert articles_table(killed) == articles_table(clean)
    assert rows(killed, "SELECT count(*) FROM partitions WHERE status = 'done'") == [(3,)]
