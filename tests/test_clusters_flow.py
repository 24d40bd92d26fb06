"""One story, one cluster: syndicated copies ingested from a loopback feed across four outlets."""

from __future__ import annotations

import html
import json
from contextlib import ExitStack
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, rss
from tests.servers import serve

pytestmark = pytest.mark.usefixtures("prefect_harness", "newsflow_env")

TEXTS = {t["id"]: t for t in json.loads((REPO / "tests/fixtures/clusters/eval.json").read_text())["texts"]}
# four loopback "outlets"; 127.0.0.2 stays outside the allow-list, as everywhere in the tests
OUTLET_HOSTS = ["127.0.0.1", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def page(entry: dict, outlet: str) -> bytes:
    """A news page with the usual furniture around one text of the evaluation set."""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in entry["text"].split("\n") if p.strip())
    meta = json.dumps({"@context": "https://schema.org", "@type": "NewsArticle", "headline": entry["headline"],
                       "datePublished": entry["published_at"], "publisher": {"@type": "Organization", "name": outlet}})
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(entry['headline'])} | {outlet}</title>
<script type="application/ld+json">{meta}</script></head><body>
<nav><a href="/">Home</a> <a href="/news">News</a> <a href="/sport">Sport</a> <a href="/opinion">Opinion</a></nav>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept</button></div>
<main><article><h1>{html.escape(entry['headline'])}</h1><div class="share">Share on Facebook | Share on X | Email</div>
{paragraphs}</article>
<aside class="newsletter"><h3>Sign up for the {outlet} Daily</h3><p>The day's news in your inbox every morning.</p></aside>
<section class="comments"><h3>Comments</h3><p>Great reporting, thank you.</p></section>
<section class="related"><h3>Related stories</h3><ul><li><a href="/a">Another story</a></li></ul></section></main>
<footer>Copyright {outlet}. All rights reserved. <a href="/privacy">Privacy</a></footer></body></html>""".encode()


@pytest.fixture
def outlets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSFLOW_ALLOW_PRIVATE_HOSTS", ",".join(OUTLET_HOSTS))
    with ExitStack() as stack:
        tables: list[dict] = [{} for _ in OUTLET_HOSTS]
        servers = [stack.enter_context(serve(t, host=h)) for t, h in zip(tables, OUTLET_HOSTS, strict=True)]
        for server, table in zip(servers, tables, strict=True):
            ROUTES[id(server)] = table  # the server reads its route table on every request
        yield servers


def test_wire_copies_share_one_cluster_and_other_stories_stay_alone(outlets, fresh_db: Path):
    from flows.ingest import ingest

    wire = [t for t in TEXTS.values() if t["story"] == "wire:port-strike"]
    event = [t for t in TEXTS.values() if t["kind"] == "independent-report" and t["id"].startswith("bridge/")]
    unrelated = [t for t in TEXTS.values() if t["kind"] == "unrelated"][:2]
    assert len(wire) == 4 and len(event) == 3 and len(unrelated) == 2
    items = []
    for i, entry in enumerate([*wire, *event, *unrelated]):
        site = outlets[i % len(outlets)]
        path = f"/news/{entry['id'].replace('/', '-').replace(':', '-')}"
        site_routes = site_routes_of(site)
        site_routes[path] = (200, {"Content-Type": "text/html; charset=utf-8"}, page(entry, f"Outlet {i % 4}"))
        items.append((site.url(path), entry["headline"]))
    items.append((items[-1][0] + "?utm_source=feed&utm_medium=rss", items[-1][1]))  # the same page again
    site_routes_of(outlets[0])["/feed.xml"] = (200, {"Content-Type": "application/rss+xml"}, rss(items))

    ingest(feeds=[outlets[0].url("/feed.xml")], db=str(fresh_db))

    with duckdb.connect(str(fresh_db), read_only=True) as con:
        cluster_of = dict(con.execute("SELECT url, cluster_id FROM articles").fetchall())
        count = con.execute("SELECT count(*) FROM articles").fetchone()[0]
        tracked = con.execute("SELECT state, reason FROM fetches WHERE url LIKE '%utm_source%'").fetchone()
        biggest = con.execute("SELECT size, outlets FROM clusters ORDER BY size DESC LIMIT 1").fetchone()
    urls = [u for u, _ in items[:-1]]
    assert count == 9 and tracked[0] == "duplicate"
    wire_clusters = {cluster_of[u] for u in urls[:4]}
    assert len(wire_clusters) == 1
    others = [cluster_of[u] for u in urls[4:]]
    assert len(set(others)) == 5 and not wire_clusters & set(others)
    assert biggest == (4, 4)


ROUTES: dict[int, dict] = {}


def site_routes_of(site) -> dict:
    return ROUTES[id(site)]
