"""Revisits: which articles are due, how a changed page becomes a new version (tasks/revisit.py,
tasks/load.py revisit_candidates and record_revisits, flows/revisit.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks.boilerplate import line_key
from tasks.revisit import compare, story_lines

SEED = (Path(__file__).parent / "fixtures" / "seed_article.html").read_text(encoding="utf-8")
HEADLINE = "Russian President Putin Visits Ally Belarus"
FIRST_PARAGRAPH = "<p>Russian President Vladimir Putin made a rare trip Monday"
CORRECTION = ("Correction: An earlier version of this story misstated the day of the visit. "
              "It was Monday, not Tuesday.")


def _edited(page: str) -> str:
    """The seed page as its newsroom might update it: a new headline, a paragraph dropped, a
    correction added at the end of the story."""
    dropped = page.index("<p>“Russia isn’t interested")
    page = page[:dropped] + page[page.index("</p>", dropped) + len("</p>"):]
    page = page.replace(HEADLINE, "Putin and Lukashenko Discuss Closer Ties in Minsk")
    last = page.rindex("</p>", 0, page.index("</article>") if "</article>" in page else len(page))
    return page[:last + 4] + f"<p>{CORRECTION}</p>" + page[last + 4:]


# --- comparing versions ---------------------------------------------------------------------------

def test_a_new_headline_and_an_added_correction_are_told_apart_from_furniture():
    old = "A story\nShare this\nThe first paragraph.\nThe second paragraph."
    new = "A story\nThe first paragraph.\nThe second paragraph, longer now.\nCorrection: the day was wrong."
    change = compare("Title", old, "Title", new, boilerplate=frozenset({line_key("Share this")}))
    assert change is not None and not change.title_changed
    assert change.diff.splitlines() == ["@@ -3 +3,2 @@", "-The second paragraph.",
                                        "+The second paragraph, longer now.", "+Correction: the day was wrong."]
    assert change.correction == "Correction: the day was wrong."
    # furniture the site is now known to repeat, dropped from the new text, is not an edit
    assert compare("Title", old, "Title", "A story\nThe first paragraph.\nThe second paragraph.",
                   boilerplate=frozenset({line_key("Share this")})) is None
    headline_only = compare("Title", old, "New title", old)
    assert headline_only is not None and headline_only.title_changed and headline_only.diff == ""
    assert headline_only.correction is None
    assert story_lines("a\n\n  \nb", frozenset()) == ["a", "b"]


def test_a_page_that_now_names_another_url_is_a_version_only_if_it_tells_the_same_story():
    from tasks.revisit import moved_elsewhere

    story = " ".join(f"Sentence {i} of the story about the harbour ferries and the storm." for i in range(20))
    assert not moved_elsewhere("https://a.example/old-slug", "https://a.example/new-slug", story,
                               story + " A paragraph added by the update.")
    assert moved_elsewhere("https://a.example/old-slug", "https://a.example/", story,
                           "Top stories today: markets, weather, sport and the town council's budget vote.")
    assert not moved_elsewhere("https://a.example/live", "https://a.example/live", story, "A rewritten live page.")


def test_only_a_notice_is_a_correction_not_a_mention_of_one():
    for line in ("The minister said the figures were correct.", "The ministry corrected its forecast on Tuesday.",
                 "A correction to the budget is expected next week."):
        change = compare("T", "One.", "T", f"One.\n{line}")
        assert change is not None and change.correction is None, line
    for notice in ("CORRECTION: The vote was on Tuesday.", "Editor’s note: names have been changed.",
                   "An earlier version of this article misspelt the mayor's name."):
        assert compare("T", "One.", "T", f"One.\n{notice}").correction == notice  # type: ignore[union-attr]
    updated = compare("T", "One.", "T", "One.\nThis story has been updated to include the minister's reply.")
    assert updated is not None and updated.correction == "This story has been updated to include the minister's reply."


# --- which articles are due -------------------------------------------------------------------------

def test_each_age_is_revisited_once_and_old_or_archived_articles_not_at_all(fresh_db: Path):
    from tasks.load import ensure_schema, revisit_candidates

    ensure_schema(fresh_db)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    ages = {"new": (0.5, "feed"), "hour": (1.5, "feed"), "late-for-hour": (3, "sitemap"),
            "six-done": (7, "urls"), "day": (30, "sitemap"), "month": (24 * 30, "feed"), "archived": (1.5, "warc"),
            "moved-on": (25, "feed")}
    with duckdb.connect(str(fresh_db)) as con:
        for name, (hours, kind) in ages.items():
            con.execute("INSERT INTO articles (article_id, url, canonical_url, source, source_kind, fetched_at) "
                        "VALUES (?, ?, ?, 's', ?, ?)", [name, f"http://127.0.0.1/{name}", f"http://127.0.0.1/{name}",
                                                        kind, now - timedelta(hours=hours)])
        # six-done was revisited at 6 h; moved-on, first fetched 25 h ago, changed at its 24 h revisit
        con.execute("INSERT INTO revisits (run_id, article_id, revisited_at, outcome) VALUES "
                    "('r1', 'six-done', ?, 'unchanged'), ('r1', 'moved-on', ?, 'changed')",
                    [now - timedelta(hours=1), now - timedelta(hours=0.5)])
        con.execute("UPDATE articles SET revised_at = ?, version = 2 WHERE article_id = 'moved-on'",
                    [now - timedelta(hours=0.5)])
    due = revisit_candidates(fresh_db, (1, 6, 24, 168), now, limit=100)
    assert [r.article_id for r in due] == ["hour", "day"]  # youngest first
    assert revisit_candidates(fresh_db, (1, 6, 24, 168), now, limit=1)[0].article_id == "hour"
    # the 24 h revisit of moved-on was made (at 24.5 h); at 30 h a fresh 24 h one is not due again
    assert "moved-on" not in {r.article_id for r in revisit_candidates(fresh_db, (1, 6, 24, 168),
                                                                        now + timedelta(hours=5), 100)}
    # six hours after its first fetch, "hour" is due again
    assert "hour" in {r.article_id for r in revisit_candidates(fresh_db, (1, 6, 24, 168), now + timedelta(hours=5), 100)}


# --- the flow, against a loopback site -----------------------------------------------------------------

@pytest.mark.usefixtures("prefect_harness", "newsflow_env")
def test_an_updated_story_becomes_a_new_version_and_an_unchanged_one_does_not(fresh_db: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    import flows.report
    from flows.ingest import ingest
    from flows.revisit import revisit
    from tests.servers import html, redirect, serve

    # distinct stories: lines shared by a site's pages are learned as its furniture (tasks/boilerplate.py)
    routes = {"/story": html(SEED), "/other": html(_story("Council Approves Cycle Lane", "the cycle lane")),
              "/gone": html(_story("Museum Reopens After Flood", "the museum")),
              "/moved": html(_story("Bakery Wins Bread Prize", "the bakery"))}
    events: list[tuple] = []
    monkeypatch.setattr(flows.report, "emit_event", lambda event, resource, payload: events.append(
        (event, resource["prefect.resource.name"], payload)))
    artifacts: list[str] = []
    monkeypatch.setattr(flows.report, "create_markdown_artifact", lambda markdown, key, description: artifacts.append(
        markdown) if key == "revisit-summary" else None)
    with serve(routes) as site:
        ingest(urls=[site.url(p) for p in routes], db=str(fresh_db))
        assert revisit(db=str(fresh_db))["revisited"] == 0  # nothing is an hour old yet
        _age(fresh_db, hours=1.5)
        routes["/story"] = html(_edited(SEED))
        routes["/gone"] = (404, {}, b"")
        routes["/moved"] = redirect(site.url("/elsewhere"))  # taken down by sending readers to another story
        routes["/elsewhere"] = html(_story("Ferries Sail Again", "the harbour ferries"))
        first = revisit(db=str(fresh_db))
        again = revisit(db=str(fresh_db))  # the same hour: every due age was made
        requests_before = len(site.requests)
        _age(fresh_db, hours=5)  # 6.5 h after the first fetch: the 6 h revisit
        third = revisit(db=str(fresh_db))
    assert {k: first[k] for k in ("revisited", "changed", "unchanged", "gone")} == \
           {"revisited": 4, "changed": 1, "unchanged": 1, "gone": 2}
    assert again["revisited"] == 0
    assert len(site.requests) - requests_before == 5 and third["unchanged"] == 2 and third["gone"] == 2
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        story = con.execute("SELECT article_id, title, text, version FROM articles WHERE url = ?",
                            [site.url("/story")]).fetchone()
        changes = con.execute("SELECT article_id, version, title_before, title_after, title_changed, diff, "
                              "correction, extractor_changed FROM article_changes").fetchall()
        kept = con.execute("SELECT text FROM article_versions WHERE article_id = ?", [story[0]]).fetchone()[0]
        outcomes = con.execute("SELECT a.url, r.outcome, r.reason, r.version FROM revisits r JOIN articles a USING (article_id) "
                               "WHERE r.run_id = ? ORDER BY a.url", [first["run_id"]]).fetchall()
        versions = con.execute("SELECT article_id, version FROM articles WHERE version > 1").fetchall()
        words = con.execute("SELECT words_before, words_after FROM article_changes").fetchone()
    from tasks.load import stats

    columns, [row] = stats(fresh_db)["source_revisions"]
    assert dict(zip(columns, row, strict=True)) == {"source": "urls", "revisited": 4, "changed": 1, "changed_rate": 0.25,
                                                    "headline_changed": 1, "corrected": 1, "gone": 2}
    assert "source_revisions" not in stats(fresh_db, since=(datetime.now(UTC) + timedelta(days=1)).date().isoformat())
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        # the article keeps its first fetch (lag, daily counts, who ran a story first go by it)
        first, revised, kept_fetch = con.execute(
            "SELECT a.fetched_at, a.revised_at, v.fetched_at FROM articles a JOIN article_versions v USING (article_id)"
        ).fetchone()
    assert story[1] == "Putin and Lukashenko Discuss Closer Ties in Minsk" and story[3] == 2
    assert CORRECTION in story[2] and "Russia isn’t interested" not in story[2]
    assert "Russia isn’t interested" in kept and CORRECTION not in kept  # the first version, whole
    [(article_id, version, before, after, title_changed, diff, correction, extractor_changed)] = changes
    assert (article_id, version, before, after) == (story[0], 2, HEADLINE, story[1])
    assert title_changed and correction == CORRECTION and extractor_changed is False
    assert f"+{CORRECTION}" in diff.splitlines()
    assert any(line.startswith("-“Russia isn’t interested") for line in diff.splitlines())
    assert versions == [(story[0], 2)]
    # each run's outcomes and changed articles are attached to its flow run
    assert len(artifacts) == 4 and artifacts[0].startswith("Revisited 0: none due.")
    assert artifacts[1].splitlines()[0] == "Revisited 4: changed 1, unchanged 1, gone 2."
    assert artifacts[1].splitlines()[-1] == (f"| {site.url('/story')} | {HEADLINE} | {story[1]} | "
                                             f"{words[0]} -> {words[1]} | {CORRECTION} |")
    # the correction is sent to Prefect for an automation to act on, once
    assert events == [("newsflow.article.corrected", site.url("/story"), {"title": story[1], "correction": CORRECTION})]
    assert first == kept_fetch and timedelta(hours=1.5) <= revised - first < timedelta(hours=2)  # revised at 1.5 h
    assert outcomes == [(site.url("/gone"), "gone", "http-404", 1), (site.url("/moved"), "gone", "moved-elsewhere", 1),
                        (site.url("/other"), "unchanged", None, 1), (site.url("/story"), "changed", None, 2)]


WORDS = ("harbour ferry council museum bakery storm river bridge market station school library garden festival "
         "mayor budget vote train road park tower square winter summer island village city coast").split()


def _story(title: str, seed: str) -> str:
    """A news page whose paragraphs share no run of words with another seed's."""
    pick = random.Random(seed).choice
    paragraphs = "".join("<p>" + " ".join(pick(WORDS) for _ in range(25)) + ".</p>" for _ in range(8))
    return f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>{paragraphs}</article></body></html>"


def _age(db: Path, hours: float) -> None:
    """Move the database's clock back: every fetch and revisit `hours` earlier."""
    shift = timedelta(hours=hours)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE articles SET fetched_at = fetched_at - ?, revised_at = revised_at - ?", [shift, shift])
        con.execute("UPDATE article_versions SET fetched_at = fetched_at - ?, replaced_at = replaced_at - ?",
                    [shift, shift])
        con.execute("UPDATE revisits SET revisited_at = revisited_at - ?", [shift])


@pytest.mark.usefixtures("prefect_harness", "newsflow_env")
def test_a_page_that_now_redirects_to_a_private_address_is_not_followed(fresh_db: Path):
    """A revisit goes through the same guard as an ingest: 127.0.0.2 is not allow-listed
    (newsflow_env allows 127.0.0.1), so it never sees a request."""
    from flows.ingest import ingest
    from flows.revisit import revisit
    from tests.servers import html, redirect, serve

    routes = {"/story": html(SEED)}
    with serve({"/": html("secret")}, host="127.0.0.2") as forbidden, serve(routes) as site:
        ingest(urls=[site.url("/story")], db=str(fresh_db))
        _age(fresh_db, hours=1.5)
        routes["/story"] = redirect(forbidden.url("/"))
        summary = revisit(db=str(fresh_db))
    assert summary["skipped"] == 1 and forbidden.requests == []
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        assert con.execute("SELECT outcome, reason, version FROM revisits").fetchall() == [
            ("skipped", "private-address", 1)]
        assert con.execute("SELECT title FROM articles").fetchall() == [(HEADLINE,)]  # as last seen


@pytest.mark.usefixtures("prefect_harness", "newsflow_env")
def test_a_revisit_cut_short_is_finished_by_the_next_run(fresh_db: Path, monkeypatch: pytest.MonkeyPatch):
    """One batch a page; the second batch's load fails (twice: its retry too), the run stops.
    The next run revisits what is left, and every article ends with one new version and one
    `revisits` row, as in a run that was never cut."""
    import tasks.load
    from flows.ingest import ingest
    from flows.revisit import revisit
    from tests.servers import html, serve

    pages = {f"/{name}": _story(f"The {name.title()} Story", name) for name in ("alpha", "beta", "gamma")}
    routes = {path: html(page) for path, page in pages.items()}
    with serve(routes) as site:
        ingest(urls=[site.url(p) for p in routes], db=str(fresh_db))
        _age(fresh_db, hours=1.5)
        for path, page in pages.items():
            routes[path] = html(page.replace("</article>", f"<p>{CORRECTION}</p></article>"))
        monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "1")
        new_versions = tasks.load._new_versions

        def crash_on_beta(con, run_id, changes, first_fetched):
            if any(r.url.endswith("/beta") for r, _ in changes):
                raise RuntimeError("the machine went down")
            return new_versions(con, run_id, changes, first_fetched)

        monkeypatch.setattr(tasks.load, "_new_versions", crash_on_beta)
        with pytest.raises(RuntimeError, match="went down"):
            revisit(db=str(fresh_db))
        with duckdb.connect(str(fresh_db), read_only=True) as con:
            done = con.execute("SELECT count(*) FROM revisits").fetchone()[0]
        monkeypatch.setattr(tasks.load, "_new_versions", new_versions)
        finished = revisit(db=str(fresh_db))
    assert 1 <= done < 3 and finished["changed"] == 3 - done
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT article_id), count(*), count(*) FILTER (WHERE outcome = 'changed') "
                           "FROM revisits").fetchone() == (3, 3, 3)
        assert con.execute("SELECT version, count(*) FROM articles GROUP BY ALL").fetchall() == [(2, 3)]
        assert con.execute("SELECT version, count(*), count(correction) FROM article_versions GROUP BY ALL"
                           ).fetchall() == [(1, 3, 3)]


@pytest.mark.usefixtures("prefect_harness", "newsflow_env")
def test_a_story_moved_to_a_new_slug_is_a_new_version_and_its_new_url_leads_to_it(fresh_db: Path):
    from flows.ingest import ingest
    from flows.revisit import revisit
    from tests.servers import html, redirect, serve

    routes = {"/2026/putin-visits-belarus": html(SEED)}
    with serve(routes) as site:
        ingest(urls=[site.url("/2026/putin-visits-belarus")], db=str(fresh_db))
        _age(fresh_db, hours=1.5)
        routes["/2026/putin-visits-belarus"] = redirect(site.url("/2026/putin-meets-lukashenko"))
        routes["/2026/putin-meets-lukashenko"] = html(SEED.replace(HEADLINE, "Putin Meets Lukashenko in Minsk"))
        assert revisit(db=str(fresh_db))["changed"] == 1
        fetched = len(site.requests)
        [again] = ingest(urls=[site.url("/2026/putin-meets-lukashenko")], db=str(fresh_db))
    assert (again["duplicate"], len(site.requests)) == (1, fetched)  # known by its new URL: not fetched again
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        assert con.execute("SELECT count(*), max(version) FROM articles").fetchone() == (1, 2)
        assert con.execute("SELECT count(DISTINCT article_id) FROM url_aliases").fetchone() == (1,)


def _validated(page: str, etag: str | None = None, last_modified: str | None = None) -> Callable[[Any], tuple]:
    """A page served with validators, answering 304 to a conditional GET that still matches them."""
    from tests.servers import html

    def route(request: Any) -> tuple:
        if (etag and request.headers.get("if-none-match") == etag) or (
                last_modified and request.headers.get("if-modified-since") == last_modified):
            return 304, {}, b""
        return html(page, **({"ETag": etag} if etag else {}), **({"Last-Modified": last_modified} if last_modified else {}))
    return route


@pytest.mark.usefixtures("prefect_harness", "newsflow_env")
def test_a_revisit_asks_only_for_a_changed_page(fresh_db: Path, monkeypatch: pytest.MonkeyPatch):
    """The stored response's ETag / Last-Modified go out as If-None-Match / If-Modified-Since; a
    304 is "unchanged" (not-modified) without a page, a 200 is compared as ever; off with
    NEWSFLOW_REVISIT_CONDITIONAL=false."""
    from flows.ingest import ingest
    from flows.revisit import revisit
    from tests.servers import html, serve

    when = "Mon, 19 Dec 2022 10:00:00 GMT"
    routes = {"/etag": _validated(SEED, etag='"v1"'),
              "/dated": _validated(_story("Council Approves Cycle Lane", "the cycle lane"), last_modified=when),
              "/edited": _validated(_story("Museum Reopens After Flood", "the museum"), etag='"m1"'),
              "/plain": html(_story("Bakery Wins Bread Prize", "the bakery"))}
    with serve(routes) as site:
        ingest(urls=[site.url(p) for p in routes], db=str(fresh_db))
        _age(fresh_db, hours=1.5)
        routes["/edited"] = _validated(_story("Museum Reopens After Flood", "the museum").replace(
            "</article>", f"<p>{CORRECTION}</p></article>"), etag='"m2"')
        seen = len(site.requests)
        first = revisit(db=str(fresh_db))
        asked = {r.path: (r.headers.get("if-none-match"), r.headers.get("if-modified-since")) for r in site.requests[seen:]}
        monkeypatch.setenv("NEWSFLOW_REVISIT_CONDITIONAL", "false")
        _age(fresh_db, hours=5)
        seen = len(site.requests)
        second = revisit(db=str(fresh_db))
        asked_again = [(r.headers.get("if-none-match"), r.headers.get("if-modified-since")) for r in site.requests[seen:]]
    assert asked == {"/etag": ('"v1"', None), "/dated": (None, when), "/edited": ('"m1"', None), "/plain": (None, None)}
    assert {k: first[k] for k in ("revisited", "changed", "unchanged")} == {"revisited": 4, "changed": 1, "unchanged": 3}
    assert first["not_modified"] == 2 and "not_modified" not in second  # no page downloaded for the two 304s
    assert asked_again == [(None, None)] * 4 and second["unchanged"] == 4
    with duckdb.connect(str(fresh_db), read_only=True) as con:
        outcomes = con.execute("SELECT a.url, r.outcome, r.reason, r.http_status FROM revisits r JOIN articles a "
                               "USING (article_id) WHERE r.run_id = ? ORDER BY a.url", [first["run_id"]]).fetchall()
        edited = con.execute("SELECT version, text FROM articles WHERE url = ?", [site.url("/edited")]).fetchone()
        run = con.execute("SELECT flow, status, discovered, loaded, failed FROM runs WHERE run_id = ?",
                          [first["run_id"]]).fetchone()
    assert outcomes == [(site.url("/dated"), "unchanged", "not-modified", 304),
                        (site.url("/edited"), "changed", None, 200),
                        (site.url("/etag"), "unchanged", "not-modified", 304),
                        (site.url("/plain"), "unchanged", None, 200)]
    assert edited[0] == 2 and CORRECTION in edited[1]
    assert run == ("revisit", "completed", 4, None, None)  # its outcomes are in `revisits`, not fetch states


def test_validators_come_from_the_stored_response_and_an_unreadable_one_gives_none(tmp_path: Path):
    from tasks.archive import raw_writer
    from tasks.records import Article, SourceKind
    from tasks.revisit import with_validators

    with raw_writer(tmp_path) as writer:
        ref = writer.write("https://a.example/x", 200, "OK", [("Content-Type", "text/html"), ("ETag", 'W/"7"'),
                                                               ("Last-Modified", "Mon, 19 Dec 2022 10:00:00 GMT")],
                           b"<p>x</p>", datetime.now(UTC))
    stored = Article(url="https://a.example/x", source="s", source_kind=SourceKind.URLS, article_id="a", raw=ref)
    lost = stored.replace(raw=ref.__class__(str(tmp_path / "erased.warc.gz"), 0, 10))
    [ready, unreadable] = with_validators([stored, lost])
    [unconditional] = with_validators([stored], conditional=False)
    assert (ready.hints.etag, ready.hints.last_modified) == ('W/"7"', "Mon, 19 Dec 2022 10:00:00 GMT")
    assert (unreadable.hints.etag, unreadable.hints.last_modified) == (None, None)
    assert (unconditional.hints.etag, unconditional.hints.last_modified) == (None, None)
    assert ready.raw is None and unreadable.raw is None and unconditional.raw is None  # all fetched again
