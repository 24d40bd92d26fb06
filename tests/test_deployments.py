"""prefect.yaml's deployments: entrypoints and parameters, and, against a real Prefect server on
loopback (a subprocess with its own PREFECT_HOME), the README's deploy -> run -> worker sequence,
`newsflow serve`, and two overlapping ingests into one DuckDB file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect import Flow
from prefect.utilities.callables import parameter_schema

from flows.deployments import DeploymentSpec, deployment_specs, load_flow
from tasks import load

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE_WARC = "data/sample/sample.warc.gz"
SAMPLE_ARTICLES, SAMPLE_URLS = 35, 38

SPECS = deployment_specs()


def spec_param(spec: DeploymentSpec) -> object:
    """One test case per deployment; an entrypoint whose file is not written yet is skipped, not failed."""
    marks = [] if spec.path.is_file() else [pytest.mark.skip(reason=f"{spec.entrypoint} does not exist yet")]
    return pytest.param(spec, id=spec.name, marks=marks)


# ---------------------------------------------------------------- without a server


def test_prefect_yaml_declares_the_deployments() -> None:
    by_name = {s.name: s for s in SPECS}
    assert set(by_name) >= {"hourly", "backfill", "reextract"}
    assert [s["cron"] for s in by_name["hourly"].schedules] == ["0 * * * *"]
    assert not by_name["backfill"].schedules and not by_name["reextract"].schedules
    assert by_name["reextract"].parameters == {"reextract": True}
    assert all(s.description for s in SPECS)


@pytest.mark.parametrize("spec", [spec_param(s) for s in SPECS])
def test_entrypoint_is_a_flow_and_parameters_validate(spec: DeploymentSpec) -> None:
    flow = load_flow(spec)
    assert isinstance(flow, Flow)
    flow.validate_parameters(spec.parameters)
    schema = parameter_schema(flow.fn)
    assert set(spec.parameters) <= set(schema.properties)


def test_ingest_parameters_are_typed_and_described() -> None:
    flow = load_flow(next(s for s in SPECS if s.name == "hourly"))
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    assert {"feeds", "sitemaps", "urls", "urls_file", "warcs", "db", "sources_file"} <= set(properties)
    assert all(p.get("description") for p in properties.values()), properties
    assert flow.validate_parameters({"warcs": [SAMPLE_WARC], "sources_file": "data/sources.toml"})
    with pytest.raises(Exception, match="warcs"):
        flow.validate_parameters({"warcs": 3})


# ---------------------------------------------------------------- a real Prefect server on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of a client of a fresh `prefect server start` on 127.0.0.1 (its own PREFECT_HOME)."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(root / "home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false",
           "NEWSFLOW_RAW_DIR": str(root / "raw"), "NEWSFLOW_EXTRACT_WORKERS": "1",
           "NEWSFLOW_DB": str(root / "default.duckdb")}
    log = (root / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # say what it was doing (a flake once gave no clue)
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s or "" for s in (exc.stdout, exc.stderr))
        pytest.fail(f"prefect {' '.join(args)}: no end after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_readme_sequence_runs_the_ingest_deployment(server_env: dict[str, str], tmp_path: Path) -> None:
    """README "Run on a schedule": work pool, deploy --all, deployment run -p ..., a worker runs it."""
    db = tmp_path / "scheduled.duckdb"
    env = {**server_env, "NEWSFLOW_DB": str(db)}
    prefect(env, "work-pool", "create", "process", "--type", "process")
    prefect(env, "deploy", "--all")
    prefect(env, "deployment", "run", "ingest/hourly", "-p", f'warcs=["{SAMPLE_WARC}"]')
    prefect(env, "worker", "start", "--pool", "process", "--run-once", timeout=150)
    assert load.query(db, "SELECT count(*) FROM articles")[1] == [(SAMPLE_ARTICLES,)]
    runs = load.query(db, "SELECT flow, status FROM runs")[1]
    assert runs == [("ingest", "completed")]


def test_serve_starts_and_shows_its_schedule(server_env: dict[str, str]) -> None:
    serve = subprocess.Popen([str(BIN / "newsflow"), "serve"], env={**server_env, "COLUMNS": "200"}, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert serve.stdout
        while time.monotonic() < deadline and serve.poll() is None:
            seen.append(serve.stdout.readline())
            if "being served" in "".join(seen).replace("\n", " "):
                break
        out = "".join(seen)
        assert "ingest/hourly" in out and "0 * * * * (UTC)" in out, out
        assert "being served" in out.replace("\n", " "), out
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_two_overlapping_ingests_both_succeed(server_env: dict[str, str], tmp_path: Path) -> None:
    """Two ingests of the same WARC into one file at once: neither fails on DuckDB's lock."""
    db = tmp_path / "shared.duckdb"
    command = [str(BIN / "newsflow"), "ingest", "--db", str(db), "--warc", SAMPLE_WARC]
    env = {**server_env, "NEWSFLOW_DB": str(db)}
    runs = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [r.communicate(timeout=240)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert load.query(db, "SELECT count(*), count(DISTINCT canonical_url) FROM articles")[1] == \
        [(SAMPLE_ARTICLES, SAMPLE_ARTICLES)]
    per_run = load.query(db, "SELECT r.status, count(*), count(*) FILTER (WHERE f.state = 'loaded') "
                             "FROM runs r JOIN fetches f USING (run_id) GROUP BY r.run_id, r.status")[1]
    assert sorted(status for status, _, _ in per_run) == ["completed", "completed"]
    assert all(n == SAMPLE_URLS for _, n, _ in per_run)  # every URL ended in a state in both runs
    assert sum(loaded for _, _, loaded in per_run) == SAMPLE_ARTICLES  # each article loaded once
