"""A benchmark corpus: N realistic news pages, as a WARC file and behind a 20-host loopback site.

    uv run python bench/corpus.py build --n 5000 [--out bench/out/n5000] [--seed 1]
    uv run python bench/corpus.py serve --dir bench/out/n5000 [--port 8471]
    uv run python bench/corpus.py weigh [--n 300]    # the pages' weight against real news pages

Pages are rendered through the bundled sample's outlet templates (`data/sample/make_sample.py`:
cookie banners, nav, share bars, ads, newsletter boxes, related stories, comments, footers), with
bodies recombined sentence by sentence from the sample's texts (the Russian outlet's sample is too
small for that: its sentences are drawn word by word, see `_sentences`), so no two pages are
near-duplicates except the ~2% planted on purpose (a wire story carried by another outlet, its
last paragraph trimmed, a local intro on top). Lengths vary (a few too-short pages), as do
comments, images, JSON-LD/meta presence, and the page's weight: inline CSS/JS, a mega-menu,
layout wrappers, ad slots, teaser grids and footer links, sized so that pages have about as many
elements and cost trafilatura about as much as real news pages (`weigh` compares them with the
extraction benchmark's pages); ~3% are section fronts or static pages (not articles). Everything is derived from (seed, page number),
so a rebuild is byte-identical and a page can be regenerated alone.

`build` writes, under the output directory (never commit it: `bench/out/` is for generated files):

    pages.warc.gz   a warcinfo record, then one gzip-member `response` record per page
    index.tsv       url, host, ip, path, warc offset, warc length, kind (one line per page)
    corpus.json     n, seed, the host -> (outlet, ip) map and counts

`serve` answers for the 20 hosts on 127.0.1.1 .. 127.0.1.20 (never 127.0.0.2: that is the tests'
forbidden address), one threaded HTTP/1.1 server per address, each page read from the WARC by
offset; `/robots.txt` allows everything. The fetcher connects by resolved IP, so the page URLs of
the site are `http://127.0.1.K:PORT/path` (`site_urls`) and the hosts must be allow-listed
(`NEWSFLOW_ALLOW_PRIVATE_HOSTS`, `allow_list`).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, unquote

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
WARC = "pages.warc.gz"
INDEX = "index.tsv"
META = "corpus.json"
DEFAULT_PORT = 8471
# Host k (1..20) is 127.0.1.k and belongs to one outlet; the Russian outlet gets one host only,
# since its sample has a single story to recombine from.
HOST_OUTLETS = (["harbourgazette"] * 5 + ["northfieldledger"] * 5 + ["kestrelnews"] * 5
                + ["brackenfieldstar"] * 4 + ["severnyvestnik"])
CRAWL_START = datetime(2026, 11, 20, 6, 0, 0, tzinfo=UTC)
WIRE_SHARE = 0.02  # planted near-duplicates
NOT_ARTICLE_SHARE = 0.03  # section fronts and static pages (outlets whose templates have them)
# Bump when the pages change: `ensure` rebuilds a corpus made by another version.
GENERATOR = 3
_SENTENCE = re.compile(r"(?<=[.!?\"”»])\s+(?=[A-ZА-Я\"“«])")


@cache
def sample() -> ModuleType:
    """`data/sample/make_sample.py` (a script, not a package), imported once."""
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "data" / "sample" / "make_sample.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["make_sample"] = module  # its dataclasses look themselves up here
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@dataclass(frozen=True, slots=True)
class Host:
    number: int  # 1..20
    outlet: str

    @property
    def ip(self) -> str:
        return f"127.0.1.{self.number}"

    @property
    def name(self) -> str:
        return f"www.{self.outlet}-{self.number:02d}.example"


HOSTS = tuple(Host(k, outlet) for k, outlet in enumerate(HOST_OUTLETS, 1))


def allow_list() -> str:
    """The value of NEWSFLOW_ALLOW_PRIVATE_HOSTS that lets the fetcher reach the 20 hosts."""
    return ",".join(h.ip for h in HOSTS)


# --------------------------------------------------------------------------- pools from the sample

@dataclass(frozen=True, slots=True)
class Pools:
    """What pages are recombined from, per language / outlet."""

    sentences: dict[str, tuple[str, ...]]  # language -> sentences
    sections: dict[str, tuple[str, ...]]  # outlet -> sections
    authors: dict[str, tuple[str, ...]]  # outlet -> author names
    keywords: tuple[str, ...]
    comments: dict[str, tuple[tuple[str, str, str], ...]]  # language -> comments
    images: dict[str, tuple[tuple[str, str], ...]]  # outlet -> (image, caption)


@cache
def pools() -> Pools:
    pages = sample().load_pages()
    sentences: dict[str, list[str]] = {}
    by_outlet: dict[str, list] = {}
    for page in pages:
        by_outlet.setdefault(page.outlet, []).append(page)
        for paragraph in page.paragraphs if page.is_article else ():
            sentences.setdefault(page.language, []).extend(s for s in _SENTENCE.split(paragraph) if len(s) > 20)
    comments: dict[str, list] = {}
    for page in pages:
        comments.setdefault(page.language, []).extend(page.comments)
    return Pools(
        sentences={lang: tuple(dict.fromkeys(s)) for lang, s in sentences.items()},
        sections={o: tuple(sorted({p.section for p in ps if p.section})) for o, ps in by_outlet.items()},
        authors={o: tuple(sorted({a for p in ps for a in p.authors})) or ("Staff",) for o, ps in by_outlet.items()},
        keywords=tuple(sorted({k for p in pages for k in p.keywords})),
        comments={lang: tuple(c) for lang, c in comments.items()},
        images={o: tuple((p.image, p.caption) for p in ps if p.image) for o, ps in by_outlet.items()},
    )


# --------------------------------------------------------------------------- one page

def _rng(seed: int, i: int, part: str) -> random.Random:
    return random.Random(f"{seed}:{i}:{part}")


def host_of(i: int) -> Host:
    return HOSTS[i % len(HOSTS)]


# Recombining whole sentences keeps pages apart only when the pool is large: two English pages of
# ~15 sentences drawn from ~400 share about one. The Russian sample has 12 sentences, so every
# Russian page repeated most of the others and all of them formed one near-duplicate cluster
# (2,489 of 50,000 pages), which made the load's clustering cost grow with the corpus. Below this
# many sentences, sentences are drawn word by word from the pool's vocabulary instead.
MIN_SENTENCE_POOL = 100


def _body(seed: int, i: int, language: str) -> list[str]:
    """Page i's own paragraphs: 1-40 of them, 1-4 sentences each, drawn from the language's pool."""
    rng = _rng(seed, i, "body")
    sentence = _sentences(language, rng)
    # log-normal around 7 paragraphs: mostly 3-15, a few one-liners (too short) and long reads
    count = max(1, min(40, round(rng.lognormvariate(math.log(7), 0.6))))
    return [" ".join(sentence() for _ in range(rng.randint(1, 4))) for _ in range(count)]


def _sentences(language: str, rng: random.Random) -> Callable[[], str]:
    """A source of sentences in `language`: the sample's own, or new ones of its words."""
    pool = pools().sentences[language]
    if len(pool) >= MIN_SENTENCE_POOL:
        return lambda: rng.choice(pool)
    words = _vocabulary(language)

    def drawn() -> str:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 22)))
        return text[0].upper() + text[1:] + "."
    return drawn


@cache
def _vocabulary(language: str) -> tuple[str, ...]:
    """The distinct words of a language's sentence pool, lowercased, without punctuation."""
    words = (w.strip(".,;:!?\"“”«»()").lower() for s in pools().sentences[language] for w in s.split())
    return tuple(sorted({w for w in words if w}))


def _wire_source(seed: int, i: int) -> int | None:
    """The earlier page whose body page i carries as a wire copy, if it is a planted near-duplicate."""
    rng = _rng(seed, i, "wire")
    if i < 60 or rng.random() >= WIRE_SHARE:
        return None
    j = i - rng.randint(1, 50)
    if host_of(j).outlet == host_of(i).outlet or "severnyvestnik" in (host_of(j).outlet, host_of(i).outlet):
        return None
    return j


def _title(paragraphs: list[str], rng: random.Random) -> str:
    words = paragraphs[0].split()[: rng.randint(7, 14)]
    return " ".join(words).rstrip(",.;:\"“”«»").strip() or "Untitled"


def make_page(seed: int, i: int):  # -> make_sample.Page
    """Page number i of the corpus (deterministic in seed and i)."""
    m, p = sample(), pools()
    host = host_of(i)
    rng = _rng(seed, i, "page")
    language = "ru" if host.outlet == "severnyvestnik" else "en"
    paragraphs = _body(seed, i, language)
    wire = _wire_source(seed, i)
    variant = ""
    if wire is not None:
        carried = _body(seed, wire, "en")
        paragraphs = ([paragraphs[0]] if rng.random() < 0.5 else []) + (carried[:-1] if len(carried) > 3 else carried)
        variant = "carried"
    kind = "article"
    if host.outlet in ("harbourgazette", "kestrelnews", "northfieldledger") and rng.random() < NOT_ARTICLE_SHARE:
        kind = "contact" if host.outlet == "northfieldledger" else "section"
    section = rng.choice(p.sections[host.outlet])
    published = CRAWL_START - timedelta(minutes=rng.randint(10, 60 * 24 * 60))
    if host.outlet == "northfieldledger":  # the template prints US Central time
        published = published.astimezone(datetime.fromisoformat("2026-01-01T00:00:00-06:00").tzinfo)
    title = _title(paragraphs, rng)
    authors = tuple(rng.sample(p.authors[host.outlet], k=min(len(p.authors[host.outlet]), rng.choice((1, 1, 1, 2)))))
    image, caption = rng.choice(p.images[host.outlet]) if p.images.get(host.outlet) and rng.random() < 0.7 else ("", "")
    comments = tuple(rng.sample(p.comments[language], k=min(len(p.comments[language]), rng.choice((0, 0, 0, 1, 3, 8)))))
    slug = m.slug(title)[:60].rstrip("-")
    path = quote(f"/{published:%Y/%m/%d}/{slug}-{i}.html" if kind == "article"
                 else f"/{m.slug(section) or 'section'}-{i}.html")  # Cyrillic slugs percent-encoded
    return m.Page(
        url=f"https://{host.name}{path}", outlet=host.outlet, kind=kind, title=title, section=section,
        published=published, paragraphs=tuple(paragraphs), authors=authors,
        byline="By " + " and ".join(authors) if authors else "",
        keywords=tuple(rng.sample(p.keywords, k=rng.randint(0, 5))),
        description=m._first_sentence(paragraphs[0]), image=image, caption=caption, comments=comments,
        jsonld=rng.random() < 0.85, meta=rng.random() < 0.9, wire_id=f"wire-{wire}" if wire is not None else "",
        wire_variant=variant, language=language, charset="windows-1251" if language == "ru" else "utf-8",
    )


# The page's furniture is sized to real news pages. The outlet templates alone give ~300
# elements a page; the real pages of the extraction benchmark (../shared/bench/aeb-dev, 88
# pages, 2019 snapshots of news sites) have p10/p50/p90 of ~330/800/1,190 elements, nest ~18
# deep, weigh ~50/120/420 KB and cost bare trafilatura ~10/19/42 CPU ms here (issue 7 says
# 12-17 ms). Lighter pages would make everything newsflow does besides extraction look bigger
# than it is next to it. Teasers carry their standfirst in a <div>: as <p>s they made the page's
# paragraph text 2.3x the body's (median; real pages 1.07x), so the extraction cascade consulted
# its second extractor on 63% of pages instead of ~5% (6% of the real ones). `bench/corpus.py
# weigh` prints both distributions.
# A page's weight (log-normal, median 1) scales the parts below together.
WEIGHT_SIGMA = 0.45


def _furniture(rng: random.Random, teasers: list) -> tuple[str, str, str, int]:
    """(head, top, bottom, depth): inline CSS/JS for <head>; a mega-menu and ad slots after
    <body>; teaser grids, more ad slots and a footer directory before </body>; and how many
    layout wrappers (nested <div>s) the body's content sits in."""
    weight = rng.lognormvariate(0, WEIGHT_SIGMA)

    def some(low: int, median: int) -> int:
        return max(low, round(median * weight * rng.uniform(0.7, 1.3)))

    rules = "\n".join(f".c{rng.randrange(10**6)} .x{k}{{margin:{k % 7}px;color:#{rng.randrange(16**6):06x}}}"
                      for k in range(some(20, 1000)))
    config = json.dumps({"ads": [{"slot": f"s{k}", "sizes": [[300, 250], [728, 90]], "targeting": {"k": rng.randrange(10**9)}}
                                 for k in range(some(5, 250))]})
    head = f"<style>\n{rules}\n</style>\n<script>window.__CONFIG__={config};</script>\n"
    menu = "\n".join(
        f'<li class="menu__item menu__item--has-children"><a class="menu__link" href="/s{k}"><span>Section {k}</span></a>'
        f'<ul class="menu__sub">{"".join(f"<li class=menu__subitem><a class=menu__sublink href=/s{k}/t{j}><span>Topic {j}</span></a></li>" for j in range(rng.randint(2, 2 + some(1, 10))))}</ul></li>'
        for k in range(some(4, 9)))
    top = (f'<header class="masthead"><div class="masthead__inner"><nav class="mega-menu" aria-label="Sections"><ul class="menu">\n{menu}\n</ul></nav>'
           f'</div></header>\n{_ads(rng, some(1, 3))}\n')
    esc, attr = sample().esc, sample().attr
    cards = "\n".join(
        f'<article class="card card--teaser"><a class="card__link" href="{attr(t.path)}"><figure class="card__media"><img src="/img/{k}.jpg" alt="" loading="lazy"></figure>'
        f'<div class="card__body"><span class="card__kicker">{esc(t.section)}</span><h3 class="card__title">{esc(t.title)}</h3>'
        f'<div class="card__standfirst">{esc(t.description)}</div><time class="card__time">{k + 1}h ago</time></div></a></article>'
        for k, t in enumerate(rng.choice(teasers) for _ in range(some(2, 16)))) if teasers else ""
    links = "\n".join(f'<li><a href="/topic/t{rng.randrange(10**5)}">Topic {rng.randrange(10**5)}</a></li>'
                      for _ in range(some(10, 80)))
    bottom = (f'<section class="teaser-grid"><h2>Most read</h2><div class="grid">\n{cards}\n</div></section>\n'
              f'{_ads(rng, some(1, 5))}\n<nav class="site-directory"><ul>\n{links}\n</ul></nav>\n')
    return head, top, bottom, some(3, 8)


def _ads(rng: random.Random, n: int) -> str:
    return "\n".join(f'<div class="ad-slot"><div class="ad-slot__label">Advertisement</div><div id="gpt-{rng.randrange(10**6)}" '
                     f'class="ad-container" data-sizes="300x250,728x90"><div class="ad-frame"><ins></ins></div></div></div>'
                     for _ in range(n))


_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def render_page(seed: int, i: int, page, context: list) -> bytes:
    """The page as served: its outlet's template, plus varied furniture, in its charset."""
    html = sample().OUTLETS[page.outlet].render(page, context)
    head, top, bottom, wrappers = _furniture(_rng(seed, i, "furniture"), [p for p in context if p is not page])
    opening = "".join(f'<div class="layout layout--l{k}">' for k in range(wrappers))
    html = html.replace("</head>", head + "</head>", 1)
    html = _BODY.sub(lambda m: m[0] + "\n" + opening + top, html, count=1)
    html = html.replace("</body>", bottom + "</div>" * wrappers + "</body>", 1)
    return html.encode(page.charset, errors="xmlcharrefreplace")


def iter_pages(n: int, seed: int = 1) -> Iterator:
    """Pages 0..n-1 (no rendering: for benchmarks that need only the texts)."""
    for i in range(n):
        yield make_page(seed, i)


def iter_rendered(n: int, seed: int = 1) -> Iterator[tuple[int, object, bytes]]:
    """(i, page, body) for pages 0..n-1; related-story lists come from each outlet's recent pages."""
    recent: dict[str, deque] = {}
    for i, page in enumerate(iter_pages(n, seed)):
        window = recent.setdefault(page.outlet, deque(maxlen=8))
        yield i, page, render_page(seed, i, page, [*window, page])
        if page.is_article:
            window.append(page)


def weigh(pages: Iterator[tuple[str, bytes]]) -> dict[str, list[float]]:
    """p10/p50/p90, over the pages, of what the furniture above is sized against: size (KB),
    element count, bare trafilatura's CPU ms (newsflow's profile, one process), newsflow's
    extractor's CPU ms, and the words in the page's <p> elements over the words of its extracted
    body (where the extraction cascade decides to consult a second extractor: tasks/extract.py)."""
    import lxml.html
    from trafilatura import bare_extraction

    sys.path.insert(0, str(REPO))
    from tasks.extract import PROFILES, SETTINGS_TAG, _paragraph_words, extract_page

    sizes: dict[str, list[float]] = {"KB": [], "elements": [], "trafilatura_ms": [], "newsflow_ms": [], "p_words_ratio": []}
    for url, body in pages:
        tree = lxml.html.fromstring(body)
        sizes["KB"].append(len(body) / 1024)
        sizes["elements"].append(sum(1 for _ in tree.iter()))
        started = time.process_time()
        bare_extraction(body, url=url, with_metadata=True, **PROFILES[SETTINGS_TAG])
        sizes["trafilatura_ms"].append((time.process_time() - started) * 1000)
        started = time.process_time()
        page = extract_page(body, url)
        sizes["newsflow_ms"].append((time.process_time() - started) * 1000)
        if page is not None:
            sizes["p_words_ratio"].append(_paragraph_words(tree) / max(1, len(page.text.split())))
    return {k: [round(sorted(v)[int(len(v) * q)], 2) for q in (0.1, 0.5, 0.9)] for k, v in sizes.items() if v}


# --------------------------------------------------------------------------- the WARC

def _record_id(key: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def build(out: Path, n: int, seed: int = 1) -> dict:
    """Write pages.warc.gz, index.tsv and corpus.json under `out`; returns the corpus.json data."""
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with (out / WARC).open("wb") as stream, (out / INDEX).open("w", encoding="utf-8") as index:
        writer = WARCWriter(stream, gzip=True, warc_version="1.0")
        info = f"software: newsflow bench/corpus.py (warcio)\r\ndescription: {n} pages, seed {seed}\r\n".encode()
        writer.write_record(writer.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(info), length=len(info),
            warc_headers_dict={"WARC-Record-ID": _record_id(f"warcinfo:{n}:{seed}"), "Content-Type": "application/warc-fields",
                               "WARC-Date": CRAWL_START.strftime("%Y-%m-%dT%H:%M:%SZ")}))
        for i, page, body in iter_rendered(n, seed):
            fetched = CRAWL_START + timedelta(seconds=i)
            ctype = "text/html; charset=utf-8" if page.charset == "utf-8" else "text/html"
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                                  ("Date", format_datetime(fetched, usegmt=True))], protocol="HTTP/1.1")
            offset = stream.tell()
            writer.write_record(writer.create_warc_record(
                page.url, "response", payload=io.BytesIO(body), http_headers=headers,
                warc_headers_dict={"WARC-Record-ID": _record_id(page.url),
                                   "WARC-Date": fetched.strftime("%Y-%m-%dT%H:%M:%SZ")}))
            host = host_of(i)
            index.write(f"{page.url}\t{host.name}\t{host.ip}\t{page.path}\t{offset}\t{stream.tell() - offset}\t{page.kind}\n")
            counts[page.kind] += 1
            counts["wire_copies"] += bool(page.wire_id)
            counts["bytes"] += len(body)
    meta = {"n": n, "seed": seed, "generator": GENERATOR, "hosts": {h.name: {"outlet": h.outlet, "ip": h.ip} for h in HOSTS},
            "counts": dict(counts), "warc_bytes": (out / WARC).stat().st_size}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
    return meta


def ensure(n: int, seed: int = 1, out: Path | None = None) -> Path:
    """The corpus directory for (n, seed), built if it is not there yet (or by another GENERATOR)."""
    directory = out or OUT / f"n{n}-s{seed}"
    meta = directory / META
    made = json.loads(meta.read_text()) if meta.exists() else {}
    if (made.get("n"), made.get("generator")) != (n, GENERATOR):
        build(directory, n, seed)
    return directory


def read_index(directory: Path) -> list[dict]:
    rows = []
    with (directory / INDEX).open(encoding="utf-8") as index:
        for line in index:
            url, host, ip, path, offset, length, kind = line.rstrip("\n").split("\t")
            rows.append({"url": url, "host": host, "ip": ip, "path": path, "offset": int(offset),
                         "length": int(length), "kind": kind})
    return rows


def site_urls(directory: Path, port: int = DEFAULT_PORT) -> list[str]:
    """The page URLs as the loopback site serves them."""
    return [f"http://{r['ip']}:{port}{r['path']}" for r in read_index(directory)]


# --------------------------------------------------------------------------- the loopback site

ROBOTS = b"User-agent: *\nAllow: /\n"


def _handler(warc_fd: int, pages: dict[str, tuple[int, int]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real site

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = unquote(self.path.split("?", 1)[0])
            if path == "/robots.txt":
                return self._send(200, "text/plain", ROBOTS)
            where = pages.get(path)
            if where is None:
                return self._send(404, "text/plain", b"not found")
            # A validator as a static web server makes one (nginx: mtime and size), so that a
            # revisit's conditional GET gets a 304 for a page that has not changed.
            etag = f'"{where[0]:x}-{where[1]:x}"'
            if self.headers.get("If-None-Match") == etag:
                return self._send(304, None, b"", etag)
            member = os.pread(warc_fd, where[1], where[0])  # one gzip member = one record
            record = next(iter(ArchiveIterator(io.BytesIO(member))))
            body = record.content_stream().read()
            self._send(200, record.http_headers.get_header("Content-Type") or "text/html", body, etag)

        def _send(self, status: int, ctype: str | None, body: bytes, etag: str | None = None) -> None:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet: thousands of requests
            pass

    return Handler


def serve(directory: Path, port: int = DEFAULT_PORT) -> list[ThreadingHTTPServer]:
    """Start one server per host address (in daemon threads); returns them."""
    fd = os.open(directory / WARC, os.O_RDONLY)
    by_ip: dict[str, dict[str, tuple[int, int]]] = {}
    for row in read_index(directory):
        by_ip.setdefault(row["ip"], {})[unquote(row["path"])] = (row["offset"], row["length"])
    servers = []
    for host in HOSTS:
        server = ThreadingHTTPServer((host.ip, port), _handler(fd, by_ip.get(host.ip, {})))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
    return servers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the WARC, index and metadata")
    b.add_argument("--n", type=int, default=5000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--out", type=Path)
    w = sub.add_parser("weigh", help="page size, element count and trafilatura time: the corpus against real pages")
    w.add_argument("--n", type=int, default=300)
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--real", type=Path, default=REPO.parent / "shared" / "bench" / "aeb-dev",
                   help="a folder of real pages (html/*.html.gz), e.g. the extraction benchmark")
    s = sub.add_parser("serve", help="serve a built corpus on 127.0.1.1..20 until interrupted")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if args.command == "build":
        out = args.out or OUT / f"n{args.n}-s{args.seed}"
        meta = build(out, args.n, args.seed)
        print(f"wrote {args.n} pages ({meta['counts']}) to {out}")
        return
    if args.command == "weigh":
        print("corpus", weigh((page.url, body) for _, page, body in iter_rendered(args.n, args.seed)))
        if (args.real / "html").is_dir():
            from extraction_quality import load_pages  # the benchmark's reader (this script's folder is on sys.path)

            print("real  ", weigh((url, raw) for _, url, _, raw in load_pages(args.real)))
        return
    serve(args.dir, args.port)
    print(f"serving {args.dir} on 127.0.1.1-{len(HOSTS)}:{args.port}", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    signal.sigwait(stop)


if __name__ == "__main__":
    main()
