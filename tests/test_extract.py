"""Extraction: decoding, the seed article, the worker pool (timeouts, crashes) and the benchmark."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
import trafilatura

from lxml import etree
from trafilatura.utils import load_html

from tasks.archive import raw_writer
from tasks.extract import (
    EXTRACTOR_VERSION,
    MAX_CHUNK,
    TIMEOUT,
    chunk_sizes,
    decode_html,
    extract_batch,
    extract_page,
    parse_html,
    run_pool,
    shutdown_pool,
)
from tasks.normalise import clean_authors, word_count
from tasks.records import Article, SourceKind, State
from tasks.settings import Settings
from tests.conftest import load_script

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SEED_HTML = REPO / "tests" / "fixtures" / "seed_article.html"
SEED_TEXT = SHARED / "seed" / "000_5f3fd007952f4428.txt"
BENCH = SHARED / "bench" / "aeb-dev"
SEED_URL = "https://news.example/europe/russian-president-putin-visits-ally-belarus"

FURNITURE = ("Sign up", "newsletter", "Privacy Policy", "Related", "Share on", "Leave a comment",
             "All rights reserved", "Home", "Subscribe")

PARAGRAPHS = [
    "The city council voted on Tuesday to extend the riverside tram line by four kilometres, "
    "ending a dispute that had stalled the project for more than two years.",
    "Supporters said the extension would connect three neighbourhoods that currently depend on "
    "a single bus route, cutting commuting times for thousands of residents every weekday.",
    "Opponents argued that the budget should instead go to repairing existing stations, several "
    "of which have been closed for maintenance since the spring floods damaged their foundations.",
    "Construction is expected to begin next summer and to last about eighteen months, the "
    "transport department said in a statement released after the vote late in the evening.",
]


# --- pages made here --------------------------------------------------------------------------

def news_page(paragraphs: list[str], title: str = "Council Approves Tram Extension") -> str:
    """A news page with the usual furniture around the article."""
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">
<title>{title} | Riverside Gazette</title>
<meta property="og:site_name" content="Riverside Gazette">
<meta name="author" content="Jane Roe">
<meta property="article:published_time" content="2023-04-11T09:30:00+01:00">
<link rel="canonical" href="https://gazette.example/news/tram-extension">
</head><body>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li></ul></nav></header>
<main><article><h1>{title}</h1><p class="byline">By Jane Roe</p>
<div class="share"><a href="#">Share on Facebook</a> <a href="#">Share on X</a></div>
<div class="article-body">{body}</div>
<aside class="newsletter"><h3>Sign up for our newsletter</h3><p>By registering you agree to the Privacy Policy.</p><button>Subscribe</button></aside>
</article>
<section class="related"><h2>Related stories</h2><ul><li><a href="/a">Bridge closed for repairs</a></li><li><a href="/b">Bus fares to rise</a></li></ul></section>
<section id="comments" class="comments"><h2>Leave a comment</h2><div class="comment"><p>Great news for the east side, finally!</p></div></section>
</main><footer><p>© 2023 Riverside Gazette. All rights reserved.</p><a href="/about">About us</a></footer>
</body></html>"""


def seed_paragraphs() -> list[str]:
    """The seed article's body paragraphs, from its first to its last line of article text."""
    lines = [line.strip() for line in SEED_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.startswith("Russian President Vladimir Putin made a rare trip"))
    last = lines.index("The Associated Press contributed to this report.")
    return lines[first:last + 1]


def assert_clean_body(text: str, paragraphs: list[str]) -> None:
    for paragraph in paragraphs:
        assert paragraph in text, f"missing paragraph: {paragraph[:60]}"
    lines = {line.strip() for line in text.splitlines()}
    for junk in FURNITURE:
        assert junk not in text or junk in " ".join(paragraphs), f"furniture in text: {junk}"
    assert not lines & {"share", "Share", "Comments", "News", "Sport"}


# --- decoding ---------------------------------------------------------------------------------

RUSSIAN = ("Президент России Владимир Путин совершил редкую поездку в Белоруссию, союзника Москвы. "
           "Он заявил, что обсуждал с Александром Лукашенко создание единого оборонного пространства.")
JAPANESE = "東京都は月曜日、新しい防災計画を発表した。計画には避難所の増設と通信網の強化が含まれている。"


def test_cp1251_without_any_declaration_decodes_readable() -> None:
    body = f"<html><head><title>Новости</title></head><body><p>{RUSSIAN * 3}</p></body></html>".encode("cp1251")
    assert RUSSIAN in decode_html(body, "text/html")


def test_shift_jis_from_meta_charset() -> None:
    page = f'<html><head><meta charset="Shift_JIS"><title>ニュース</title></head><body><p>{JAPANESE}</p></body></html>'
    assert JAPANESE in decode_html(page.encode("shift_jis"), None)


def test_http_equiv_meta_and_header_charset() -> None:
    page = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251"></head><p>{RUSSIAN}</p>'
    assert RUSSIAN in decode_html(page.encode("cp1251"), "text/html")
    assert RUSSIAN in decode_html(f"<p>{RUSSIAN}</p>".encode("koi8_r"), "text/html; charset=KOI8-R")


def test_latin1_label_means_windows_1252() -> None:
    body = "<p>It\u2019s caf\u00e9 time \u2014 \u201cquoted\u201d</p>".encode("cp1252")
    assert "It\u2019s caf\u00e9 time \u2014 \u201cquoted\u201d" in decode_html(body, "text/html; charset=ISO-8859-1")


def test_utf8_body_under_a_legacy_label_is_read_as_utf8() -> None:
    body = '<meta charset="iso-8859-1"><p>Müller’s café</p>'.encode()
    assert "Müller’s café" in decode_html(body, None)


def test_invalid_utf8_does_not_crash() -> None:
    text = decode_html(b"<html><body><p>caf\xc3\xa9 \xff\xfe broken \xc3</p></body></html>", "text/html; charset=utf-8")
    assert "café" in text and "broken" in text and "\ufffd" in text
    assert isinstance(decode_html(b"\xff" * 100, None), str)
    assert decode_html(b"", None) == ""


# --- parsing ----------------------------------------------------------------------------------

def _same_tree_as_trafilatura(body: bytes, content_type: str | None = None) -> bool:
    """parse_html's tree serialises exactly as trafilatura's load_html on decode_html's text, and
    each of its elements has the Python class lxml.html gives it there."""
    ours, theirs = parse_html(body, content_type), load_html(decode_html(body, content_type))
    if ours is None or theirs is None:
        return ours is None and theirs is None
    return (etree.tostring(ours, encoding="unicode") == etree.tostring(theirs, encoding="unicode")
            and [type(e) for e in ours.iter()] == [type(e) for e in theirs.iter()])


EDGE_PAGES = {
    "controls": "<html><body><p>a\x00b\x01c\x0bd\x0ce\x1ff\ttab\rcr</p></body></html>".encode(),
    "noncharacters": "<html><body><p>x\ufffey\uffffz caf\u00e9</p></body></html>".encode(),
    # libxml2 reads an XHTML DOCTYPE as XHTML (xmlns, an added <meta>); load_html drops it
    "xhtml doctype": b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
                     b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd"><html><head><title>t</title></head>'
                     b'<body><p>t</p></body></html>',
    "self-closing html": b'<!DOCTYPE html>\n<html lang="en"/>\n<head><title>t</title></head><body><p>t</p></body>',
    "utf-8 bom": "\ufeff<html><body><p>M\u00fcller</p></body></html>".encode("utf-8"),
    "utf-16 bom": "\ufeff<html><body><p>M\u00fcller</p></body></html>".encode("utf-16"),
    "cp1252 declared": '<html><head><meta charset="iso-8859-1"></head><body><p>caf\u00e9 \u2014</p></body></html>'.encode("cp1252"),
    "cp1251 undeclared": f"<html><body><p>{RUSSIAN * 3}</p></body></html>".encode("cp1251"),
    "broken utf-8 declared": b"<html><body><p>caf\xc3\xa9 \xff\xfe broken \xc3</p></body></html>",
    "xml declaration": b'<?xml version="1.0" encoding="utf-8"?><html><body><p>x</p></body></html>',
    "not html": b"just some words, no markup at all",
    "a fragment": b"<p>one block</p>",
    "empty": b"",
    "whitespace": b"  \n ",
    "control bytes only": b"\x00\x01\x02",
    # lxml.html gives these tags their own classes (FormElement, ...)
    "forms": b'<html><body><FORM action="/s"><Input name="q" value="1"><label for="q">q</label>'
             b'<select><option>1</option></select><textarea>t</textarea></FORM><p>x</p></body></html>',
}


@pytest.mark.parametrize("name", sorted(EDGE_PAGES))
def test_parse_html_builds_trafilaturas_tree_from_bytes(name: str) -> None:
    assert _same_tree_as_trafilatura(EDGE_PAGES[name], "text/html; charset=utf-8" if "declared" in name else None)


def test_parse_html_matches_on_real_pages() -> None:
    import gzip

    pages = [SEED_HTML.read_bytes()] if SEED_HTML.exists() else []
    pages += [news_page(PARAGRAPHS).encode()]
    if BENCH.exists():
        pages += [gzip.decompress(f.read_bytes()) for f in sorted((BENCH / "html").glob("*.html.gz"))]
    differing = [i for i, body in enumerate(pages) if not _same_tree_as_trafilatura(body)]
    assert differing == []
    assert parse_html(news_page(PARAGRAPHS).encode()) is not None


def test_extract_page_reads_bytes_as_it_reads_their_text() -> None:
    body = f'<html><head><meta charset="windows-1251"><title>Новости</title></head><body><article>' \
           f'{"".join(f"<p>{RUSSIAN} {i}</p>" for i in range(6))}</article></body></html>'.encode("cp1251")
    from_bytes, from_text = extract_page(body, "https://a.example/x"), extract_page(decode_html(body, None), "https://a.example/x")
    assert from_bytes is not None and RUSSIAN in from_bytes.text
    assert from_bytes == from_text


# --- one page ---------------------------------------------------------------------------------

def test_own_news_page_keeps_the_article_and_drops_the_furniture() -> None:
    page = extract_page(news_page(PARAGRAPHS), "https://gazette.example/news/tram-extension?utm_source=x")
    assert page is not None
    assert_clean_body(page.text, PARAGRAPHS)
    assert "Great news for the east side" not in page.text  # comments excluded
    assert page.title == "Council Approves Tram Extension"
    assert page.site_name == "Riverside Gazette"
    assert clean_authors(page.authors) == ("Jane Roe",)
    assert page.date == "2023-04-11T09:30:00+01:00"  # the meta tag's time, consistent with the day
    assert dict(page.field_sources)["date"] == "meta"
    assert page.language == "en-GB"
    assert page.canonical_link == "https://gazette.example/news/tram-extension"
    assert page.extractor_version == EXTRACTOR_VERSION
    assert EXTRACTOR_VERSION.startswith(f"trafilatura-{trafilatura.__version__}+precision+")
    assert json.loads(page.extraction_settings)["favor_precision"] is True
    assert page.word_count == word_count(page.text) > 0  # counted once, here, for every later stage


GERMAN = ["Der Stadtrat hat am Dienstag beschlossen, die Straßenbahnlinie bis zum neuen Krankenhaus im Osten "
          "der Stadt zu verlängern. Die Bauarbeiten sollen im kommenden Frühjahr beginnen und etwa zwei Jahre dauern.",
          "Anwohner hatten seit Jahren eine bessere Verbindung gefordert. Die Kosten werden auf rund vierzig "
          "Millionen Euro geschätzt, von denen das Land einen großen Teil übernehmen will."] * 3


def test_a_page_that_declares_no_language_gets_the_one_its_text_is_in() -> None:
    undeclared = news_page(GERMAN).replace(' lang="en-GB"', "")
    assert ' lang="' not in undeclared and "og:locale" not in undeclared  # it says nothing
    page = extract_page(undeclared, "https://gazette.example/news/tram-extension")
    assert page is not None and (page.language, dict(page.field_sources)["language"]) == ("de", "text")
    # a declared language is kept as declared (the text is not checked against it)
    declared = extract_page(news_page(GERMAN), "https://gazette.example/news/tram-extension")
    assert declared is not None and declared.language == "en-GB" and dict(declared.field_sources)["language"] != "text"


def test_a_language_is_detected_only_when_the_text_is_clear_enough() -> None:
    from tasks.extract import detected_language

    assert detected_language(" ".join(GERMAN)) == "de"
    assert detected_language("Le conseil municipal a approuvé mardi le prolongement du tramway vers le nouvel "
                             "hôpital, un projet attendu depuis des années par les habitants du quartier.") == "fr"
    assert detected_language("") is None
    assert detected_language("12:30 | 4-2 | 17.5%") is None  # no words to go by


def test_canonical_link_is_none_when_the_page_gives_none() -> None:
    page = extract_page(news_page(PARAGRAPHS).replace('<link rel="canonical" href="https://gazette.example/news/tram-extension">', ""),
                        "https://gazette.example/x")
    assert page is not None and page.canonical_link is None


def _declared_site_name(html: str) -> str:
    """The og:site_name the fixture declares (read here so the test does not pin the fixture's brand)."""
    return lxml.html.fromstring(html).xpath('string(//meta[@property="og:site_name"]/@content)')


@pytest.mark.skipif(not SEED_HTML.exists() or not SEED_TEXT.exists(), reason="seed fixture or shared seed text absent")
def test_seed_article() -> None:
    page = extract_page(decode_html(SEED_HTML.read_bytes(), None), SEED_URL)
    assert page is not None
    assert page.title == "Russian President Putin Visits Ally Belarus"
    assert page.date.startswith("2022-12-19T")  # the day with its time and zone
    assert clean_authors(page.authors) == ("Web Staff",)
    assert page.site_name == _declared_site_name(SEED_HTML.read_text(encoding="utf-8"))
    paragraphs = seed_paragraphs()
    assert len(paragraphs) >= 10
    assert_clean_body(page.text, paragraphs)
    assert "What you need to know" not in page.text


def test_page_without_article_and_deep_nesting_give_none() -> None:
    blank = "<html><head><title>Menu</title></head><body><script>var a = 1;</script><img src=x.png></body></html>"
    assert extract_page(blank, "https://a.example/") is None
    deep = "<html><body>" + "<div>" * 5000 + "<p>" + " ".join(PARAGRAPHS) + "</p>" + "</div>" * 5000 + "</body></html>"
    # libxml2 stops building trees past 256 levels and trafilatura then finds nothing: the
    # caller's "no-text", not a crash.
    page = extract_page(deep, "https://a.example/deep")
    assert page is None or PARAGRAPHS[0][:40] in page.text


# --- the stage, over a WARC written here --------------------------------------------------------

def _record(writer, url: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> Article:
    fetched = datetime(2024, 5, 1, tzinfo=UTC)
    ref = writer.write(url, 200, "OK", [("Content-Type", content_type)], body, fetched)
    return Article(url=url, source="test", source_kind=SourceKind.URLS, final_url=url, http_status=200,
                   fetched_at=fetched, content_type=content_type, raw=ref)


def test_extract_batch_over_a_warc(tmp_path: Path) -> None:
    settings = Settings(raw_dir=tmp_path, extract_workers=2, extract_timeout=20, max_page_bytes=60_000, min_words=50)
    with raw_writer(tmp_path) as writer:
        good = [_record(writer, f"https://gazette.example/{i}", news_page(PARAGRAPHS, f"Story {i}").encode()) for i in range(5)]
        empty = _record(writer, "https://gazette.example/empty", b"<html><body><script>var a = 1;</script></body></html>")
        short = _record(writer, "https://gazette.example/short", news_page(["A short note, nothing more to say here today."]).encode())
        large = _record(writer, "https://gazette.example/large", news_page(PARAGRAPHS * 200).encode())
        cp1251 = _record(writer, "https://gazette.example/ru", news_page([f"{RUSSIAN} Абзац номер {n}." for n in range(4)]).replace('<meta charset="utf-8">', "").encode("cp1251"),
                         "text/html")
    done = Article(url="https://gazette.example/done", source="test", source_kind=SourceKind.URLS).finish(State.BLOCKED, "http-403")
    no_raw = Article(url="https://gazette.example/none", source="test", source_kind=SourceKind.URLS)
    records = [*good, empty, short, large, cp1251, done, no_raw]

    result = extract_batch(records, settings)

    assert [r.url for r in result] == [r.url for r in records]
    for record in result[:5]:
        assert record.state is None and record.extracted is not None
        assert_clean_body(record.extracted.text, PARAGRAPHS)
    assert result[1].extracted.title == "Story 1"
    assert (result[5].state, result[5].reason) == (State.NOT_ARTICLE, "no-text")
    assert (result[6].state, result[6].reason) == (State.NOT_ARTICLE, "too-short")
    assert (result[7].state, result[7].reason) == (State.SKIPPED, "too-large")
    assert RUSSIAN in result[8].extracted.text
    assert result[9] is done and result[10] is no_raw


# --- the pool runner: timeouts and crashes ------------------------------------------------------
# Module-level callables so that worker processes can unpickle them.

def _sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _deaf(seconds: float) -> float:
    """Sleeps with SIGALRM blocked, like C code that never returns to the interpreter."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        time.sleep(seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return seconds


def _fragile(value: int) -> int:
    if value < 0:
        os._exit(11)  # a segfaulting extractor, as far as the parent can tell
    if value == 13:
        raise KeyError(value)
    return value * 2


def _pid(_: object) -> int:
    return os.getpid()


def test_pool_is_worker_processes_reused_across_batches() -> None:
    first = {o.value for o in run_pool(_pid, list(range(8)), workers=2, timeout=5)}
    second = {o.value for o in run_pool(_pid, list(range(8)), workers=2, timeout=5)}
    assert os.getpid() not in first | second
    assert len(first | second) <= 2  # no new processes for the second batch


def _pool_pids() -> set[int]:
    from tasks import extract

    return set(extract._pool._processes) if extract._pool is not None else set()  # no public API


def test_pool_is_replaced_between_batches_once_its_workers_ran_their_share() -> None:
    shutdown_pool()
    run_pool(_pid, list(range(3)), workers=2, timeout=5, recycle_after=2)
    first = _pool_pids()
    # 3 pages run, under 2 workers x 2 pages: the same processes take the next batch
    outcomes = run_pool(_pid, list(range(3)), workers=2, timeout=5, recycle_after=2)
    assert {o.value for o in outcomes} <= first and _pool_pids() == first
    # 6 pages: worn out, so the third batch starts on fresh processes, and the old ones are gone
    outcomes = run_pool(_pid, list(range(3)), workers=2, timeout=5, recycle_after=2)
    assert [o.error for o in outcomes] == [None] * 3
    assert not {o.value for o in outcomes} & first and not _pool_pids() & first
    for pid in first:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    # without a limit the pool is kept, however much it ran
    kept = _pool_pids()
    run_pool(_pid, list(range(8)), workers=2, timeout=5)
    run_pool(_pid, list(range(8)), workers=2, timeout=5)
    assert _pool_pids() == kept


def test_soft_timeout_fails_only_the_slow_item() -> None:
    start = time.monotonic()
    outcomes = run_pool(_sleepy, [0.0, 30.0, 0.0, 0.01], workers=2, timeout=0.5)
    assert [o.error for o in outcomes] == [None, TIMEOUT, None, None]
    assert [o.value for o in outcomes if o.error is None] == [0.0, 0.0, 0.01]
    assert time.monotonic() - start < 20


def test_hard_timeout_kills_a_deaf_worker_and_the_pool_keeps_working() -> None:
    start = time.monotonic()
    outcomes = run_pool(_deaf, [0.0, 60.0, 0.0, 0.0, 0.0], workers=2, timeout=0.5)
    assert outcomes[1].error == TIMEOUT
    assert [o.value for i, o in enumerate(outcomes) if i != 1] == [0.0] * 4
    assert time.monotonic() - start < 30
    assert [o.value for o in run_pool(_sleepy, [0.0, 0.0, 0.0], workers=2, timeout=0.5)] == [0.0] * 3


def test_a_crashing_worker_fails_only_its_item() -> None:
    outcomes = run_pool(_fragile, [1, 2, -1, 3, 13, 4], workers=2, timeout=5)
    assert [o.value for o in outcomes] == [2, 4, None, 6, None, 8]
    assert outcomes[2].error == "extract-error:BrokenProcessPool"
    assert outcomes[4].error == "extract-error:KeyError"
    assert [o.value for o in run_pool(_fragile, [5], workers=2, timeout=5)] == [10]


def test_a_crash_inside_a_chunk_of_many_pages_fails_only_its_page() -> None:
    items = list(range(100, 220))  # (13 would raise)
    items[70] = -1  # mid-batch, inside a 12-page chunk
    outcomes = run_pool(_fragile, items, workers=2, timeout=5)
    assert outcomes[70].error == "extract-error:BrokenProcessPool"
    assert [o.value for i, o in enumerate(outcomes) if i != 70] == [2 * v for i, v in enumerate(items) if i != 70]


@pytest.mark.parametrize("items", [1, 2, 7, 40, 97, 500, 5003])
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_a_batch_is_cut_into_chunks_that_shrink_to_single_pages_at_its_end(items: int, workers: int) -> None:
    sizes = chunk_sizes(items, workers)
    assert sum(sizes) == items and min(sizes) >= 1 and max(sizes) <= MAX_CHUNK
    assert sizes == sorted(sizes, reverse=True)
    # the workers that finish first wait for at most one page of another's
    assert sizes[-min(items, workers):] == [1] * min(items, workers)
    if items >= 500 and workers <= 2:  # big batches still go in full chunks (fewer round trips)
        assert sizes[0] == MAX_CHUNK and len(sizes) < items / 5


# --- the benchmark ------------------------------------------------------------------------------

@pytest.mark.skipif(not (BENCH / "ground-truth.json").exists(), reason="aeb-dev benchmark absent")
def test_benchmark_f1() -> None:
    bench = load_script(REPO / "bench" / "extraction_quality.py", "extraction_quality")
    start = time.monotonic()
    report = bench.evaluate(BENCH)
    assert len(report.pages) == 88
    assert report.f1 >= 0.975, f"F1 {report.f1:.3f}"  # plain trafilatura: 0.969; newsflow measured 0.976
    assert time.monotonic() - start < 60


# --- issue 8: evidence beyond one extractor, metadata with sources ------------------------------

from tasks.boilerplate import MAX_TRIM, Block, line_key, shingles, trim_edges  # noqa: E402

NEWSLETTER = "Sign up for the Morning Brief, our daily newsletter, delivered to your inbox."


def test_trim_edges_drops_unsupported_edges_but_never_quotes_or_the_middle() -> None:
    blocks = [Block("p", "Breaking: our headline repeated as a teaser for the story"), *(Block("p", p) for p in PARAGRAPHS[:2]),
              Block("p", "An unconfirmed middle paragraph that the second extractor did not see at all here"),
              *(Block("p", p) for p in PARAGRAPHS[2:]), Block("quote", "An embedded post that readability drops every time"),
              Block("p", "About us: the Gazette is a publisher of fine local news since the year 1901 in town")]
    evidence = shingles(" ".join(PARAGRAPHS))
    kept = trim_edges(blocks, evidence)
    assert [b.text for b in kept] == [b.text for b in blocks[1:-1]]
    assert trim_edges(blocks, set()) == blocks  # no evidence, no change


def test_trim_edges_keeps_from_the_first_to_the_last_supported_block() -> None:
    # Every pattern of supported (S), unsupported (u) and quote (q) blocks up to length 5: what is
    # kept runs from the first S or q to the last (or nothing is trimmed if over MAX_TRIM / none).
    body = {"S": PARAGRAPHS[0], "u": "Unrelated words about nothing in particular that nobody wrote down", "q": "An embedded post"}
    evidence = shingles(PARAGRAPHS[0])
    for n in range(1, 6):
        for pattern in itertools.product("Suq", repeat=n):
            blocks = [Block("quote" if k == "q" else "p", body[k]) for k in pattern]
            bounds = [i for i, k in enumerate(pattern) if k != "u"]
            expected = blocks if not bounds else blocks[bounds[0]:bounds[-1] + 1]
            cut = sum(len(b.text.split()) for b in blocks) - sum(len(b.text.split()) for b in expected)
            if cut > MAX_TRIM * sum(len(b.text.split()) for b in blocks):
                expected = blocks
            assert trim_edges(blocks, evidence) == expected, pattern


def store(db: Path, texts: list[str]) -> None:
    from tasks.load import ensure_schema, transaction

    ensure_schema(db)
    with transaction(db) as con:
        for i, text in enumerate(texts):
            con.execute("INSERT INTO articles (article_id, url, canonical_url, domain, text, fetched_at) "
                        "VALUES (?, ?, ?, 'gazette.example', ?, now())",
                        [f"id{i}", f"https://gazette.example/{i}", f"https://gazette.example/{i}", text])


def test_recurring_lines_need_several_articles(tmp_path: Path) -> None:
    from tasks.load import learn_site_boilerplate, site_boilerplate

    store(tmp_path / "two.duckdb", [f"{p}\n{NEWSLETTER}" for p in PARAGRAPHS[:2]])
    assert learn_site_boilerplate(tmp_path / "two.duckdb") == 0
    assert site_boilerplate(tmp_path / "two.duckdb", ["gazette.example"]) == {}  # two articles are not a pattern yet
    spaced = f"  {NEWSLETTER.upper()}  "  # case and spacing do not make another line
    store(tmp_path / "more.duckdb", [f"{p}\n{NEWSLETTER}" for p in PARAGRAPHS[:2]] + [f"{PARAGRAPHS[2]}\n{spaced}"])
    assert learn_site_boilerplate(tmp_path / "more.duckdb", ["gazette.example"]) == 1
    assert site_boilerplate(tmp_path / "more.duckdb", ["gazette.example"]) == \
        {"gazette.example": frozenset({line_key(NEWSLETTER)})}


def test_site_boilerplate_is_learned_from_stored_articles(tmp_path: Path) -> None:
    # Imported here: pool workers import this module to run its helpers, and tasks.load imports prefect.
    from tasks.load import learn_site_boilerplate, site_boilerplate

    db = tmp_path / "news.duckdb"
    store(db, [f"{paragraph}\n{NEWSLETTER}" for paragraph in PARAGRAPHS])
    assert site_boilerplate(db, ["gazette.example"]) == {}  # nothing learned until asked (a run's end)
    learn_site_boilerplate(db, ["gazette.example", "other.example"])
    learned = site_boilerplate(db, ["gazette.example", "other.example"])
    assert learned == {"gazette.example": frozenset({line_key(NEWSLETTER)})}

    html = news_page([*PARAGRAPHS, NEWSLETTER])
    assert NEWSLETTER in extract_page(html, "https://gazette.example/new").text
    page = extract_page(html, "https://gazette.example/new", boilerplate=learned["gazette.example"])
    assert NEWSLETTER not in page.text and PARAGRAPHS[-1] in page.text


def test_learning_needs_memory_for_the_sample_not_for_its_lines_times_texts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.load import learn_site_boilerplate, site_boilerplate

    # 200 articles of 300 lines (~12 KB each, 2.4 MB in all): a query that carried each text
    # along with each of its lines needed ~700 MB and ran out of a 32MB limit.
    db = tmp_path / "news.duckdb"
    store(db, [f"{NEWSLETTER}\n" + "\n".join(f"line {i} of article {a}, told at some length" for i in range(300))
               for a in range(200)])
    monkeypatch.setenv("NEWSFLOW_DUCKDB_MEMORY_LIMIT", "32MB")
    assert learn_site_boilerplate(db, ["gazette.example"]) == 1
    assert site_boilerplate(db, ["gazette.example"]) == {"gazette.example": frozenset({line_key(NEWSLETTER)})}


def test_learned_lines_stay_when_newer_articles_no_longer_carry_them(tmp_path: Path) -> None:
    from tasks.load import learn_site_boilerplate, site_boilerplate, transaction

    db = tmp_path / "news.duckdb"
    store(db, [f"{paragraph}\n{NEWSLETTER}" for paragraph in PARAGRAPHS])
    learn_site_boilerplate(db, sample=4)
    # Articles extracted since lack the line (it was removed from them) and fill the sample.
    with transaction(db) as con:
        con.execute("DELETE FROM articles")
    store(db, PARAGRAPHS)
    assert learn_site_boilerplate(db, sample=4) == 0
    assert site_boilerplate(db, ["gazette.example"]) == {"gazette.example": frozenset({line_key(NEWSLETTER)})}


def test_json_ld_time_authors_and_url_date_with_sources() -> None:
    ld = ('<script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle",'
          '"datePublished": "2023-04-11T17:05:00-04:00", "author": [{"@type": "Person", "name": "Ann Lee"},'
          '{"@type": "Organization", "name": "Riverside Gazette"}]}</script></head>')
    page = extract_page(news_page(PARAGRAPHS).replace("</head>", ld), "https://gazette.example/2023/04/11/tram")
    sources = dict(page.field_sources)
    assert (page.date, sources["date"]) == ("2023-04-11T17:05:00-04:00", "json-ld")
    assert (page.authors, sources["authors"]) == (("Ann Lee",), "json-ld")
    # A URL that files the story on another day outranks a page timestamp that disagrees with it.
    moved = extract_page(news_page(PARAGRAPHS), "https://gazette.example/2023/05/02/tram")
    assert (moved.date, dict(moved.field_sources)["date"]) == ("2023-05-02", "url")


def _with_head(extra: str) -> str:
    return news_page(PARAGRAPHS).replace("</head>", extra + "</head>")


def _ld(fields: str) -> str:
    return ('<script type="application/ld+json">{"@context": "https://schema.org", '
            f'"@type": "NewsArticle", "headline": "Tram", {fields}}}</script>')


@pytest.mark.parametrize(("head", "expected"), [
    (_ld('"isAccessibleForFree": false'), (False, "json-ld")),
    (_ld('"isAccessibleForFree": "False"'), (False, "json-ld")),  # the string form pages often write
    (_ld('"isAccessibleForFree": "https://schema.org/True"'), (True, "json-ld")),
    # Google's markup for a locked part of an otherwise open article: paywalled
    (_ld('"isAccessibleForFree": true, "hasPart": {"@type": "WebPageElement", '
         '"isAccessibleForFree": false, "cssSelector": ".locked"}'), (False, "json-ld")),
    ('<meta property="article:content_tier" content="locked">', (False, "meta")),
    ('<meta property="article:content_tier" content="metered">', (False, "meta")),
    ('<meta name="article:content_tier" content="Free">', (True, "meta")),
    # JSON-LD outranks the meta tag
    (_ld('"isAccessibleForFree": false') + '<meta property="article:content_tier" content="free">',
     (False, "json-ld")),
    ('<meta property="article:content_tier" content="premium-ish">', (None, None)),  # not a tier
    (_ld('"isAccessibleForFree": "maybe"'), (None, None)),
    ("", (None, None)),  # most pages say nothing: unknown, not free
])
def test_free_access_is_what_the_page_declares(head: str, expected: tuple[bool | None, str | None]) -> None:
    page = extract_page(_with_head(head), "https://gazette.example/news/tram-extension")
    assert page is not None and PARAGRAPHS[-1] in page.text
    assert (page.free_access, dict(page.field_sources).get("free_access")) == expected


def _padded_page(extra_words: int) -> str:
    """The news page with a footer of <p> text (never article text) adding about `extra_words` words."""
    filler = " ".join(f"word{i}" for i in range(extra_words))
    return news_page(PARAGRAPHS).replace("</footer>", f"<p>{filler}</p></footer>")


def test_cascade_reuses_trafilaturas_readability_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.extract as extract

    def refuse(html: str) -> str:
        raise AssertionError("readability-lxml ran although trafilatura's summary was at hand")

    words = sum(len(p.split()) for p in PARAGRAPHS)
    monkeypatch.setattr(extract, "_readability_text", refuse)
    page = extract_page(_padded_page(int(words * 0.5)), "https://gazette.example/news/tram-extension")
    # In doubt (1.5x the body's words in <p>), yet settled with the summary trafilatura made anyway.
    # If a trafilatura upgrade stops calling the hook, this fails: no summary, and `refuse` runs.
    assert extract._side_runs.readability is not None
    assert page is not None and PARAGRAPHS[-1] in page.text


def test_a_readability_summary_reads_one_block_a_line_never_two_glued() -> None:
    import tasks.extract as extract

    # trafilatura's port of readability leaves a kicker <span> unwrapped before the headline,
    # where readability-lxml wraps it in a <p>: read as text, "Local" and "More" must not become
    # one word "LocalMore" (a body taken from the summary would carry it).
    summary = lxml.html.fromstring(
        '<div><div class="card"><span class="kicker">Local</span><h3>More than 3,000 maps</h3>'
        '<p>are now <b>online</b>, after a three-year project.</p><time>2h ago</time></div>'
        '<ul><li>First point</li><li>Second<br>line</li></ul></div>')
    assert extract._summary_text(summary).splitlines() == [
        "Local", "More than 3,000 maps", "are now online, after a three-year project.", "2h ago",
        "First point", "Second", "line"]


def test_readability_lxml_runs_when_the_page_holds_twice_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.extract as extract

    runs: list[str] = []
    monkeypatch.setattr(extract, "_readability_text", lambda html: runs.append(html) or "")
    words = sum(len(p.split()) for p in PARAGRAPHS)
    extract_page(_padded_page(int(words * 0.1)), "https://gazette.example/news/tram-extension")
    assert runs == []  # not in doubt
    extract_page(_padded_page(int(words * 1.5)), "https://gazette.example/news/tram-extension")
    assert len(runs) == 1


def test_a_tdm_reservation_or_an_ai_opt_out_is_recorded_with_its_source() -> None:
    url = "https://gazette.example/news/tram-extension"
    page = news_page(PARAGRAPHS)
    with_meta = page.replace("<head>", '<head><meta name="tdm-reservation" content="1">')
    noai = page.replace("<head>", '<head><meta name="robots" content="index, follow, noai, noimageai">')
    said_no = page.replace("<head>", '<head><meta name="tdm-reservation" content="0">')
    cases = [(page, None, (None, None)), (with_meta, None, (True, "meta")), (noai, None, (True, "robots-meta")),
             (said_no, None, (False, "meta")),
             (said_no, "1", (True, "header")),  # the protocol puts the response's header first
             (page, " 0 ", (False, "header"))]
    for html, header, expected in cases:
        extracted = extract_page(html, url, header=lambda name, h=header: h if name == "tdm-reservation" else None)
        assert extracted is not None
        assert (extracted.tdm_reserved, dict(extracted.field_sources).get("tdm_reserved")) == expected, (header, expected)
