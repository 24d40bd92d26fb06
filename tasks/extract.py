"""Extraction: raw archived pages -> main text and metadata. The only module that imports trafilatura.

    extract_batch(records, settings)
      └─ run_pool(_extract_job, jobs)          parent: chunks, hard deadlines, crash isolation
           └─ _run_chunk(fn, jobs, timeout)   worker process: soft per-page SIGALRM limit
                └─ _extract_job(job)          read_raw -> parse_html -> extract_page

Extraction runs in worker processes, never threads: trafilatura (lxml/libxml2) segfaults under
concurrent threads (trafilatura #840, #925). Workers read the raw bytes from the WARC archive
themselves, so HTML never crosses a process or task boundary (STYLE.md rule 3).

This module does not import prefect: worker processes import it to run `_extract_job` and would
otherwise pay Prefect's import on every pool start. The task that runs it is tasks/pipeline.py's.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from copy import deepcopy
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import cache, partial
from itertools import accumulate, pairwise
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import trafilatura
import trafilatura.external
from charset_normalizer import from_bytes
from lxml import etree
from readability import Document
from readability.readability import Unparseable
from trafilatura import bare_extraction
from trafilatura.metadata import extract_url
from trafilatura.utils import DOCTYPE_TAG, FAULTY_HTML, HTML_PARSER, is_dubious_html, load_html
from trafilatura.xml import xmltotxt

from tasks.archive import read_raw
from tasks.boilerplate import Block, drop_known, n_words, shingles, tokens, trim_edges
from tasks.normalise import domain_of, word_count
from tasks.records import Article, Extracted, RawRef, State
from tasks.settings import Settings
from tasks.similarity import signatures

log = logging.getLogger(__name__)

# --- decoding -------------------------------------------------------------------------------

_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:+-]+)", re.IGNORECASE)
# Covers both <meta charset="x"> and <meta http-equiv="Content-Type" content="...; charset=x">.
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([\w.:+-]+)", re.IGNORECASE)
# Browsers look at the first 1024 bytes; news pages often put megabytes of inline CSS/JS first
# and the <meta> later, so we look further.
_META_SCAN_BYTES = 8192
# WHATWG Encoding Standard: these labels mean their superset in every browser, and pages rely
# on it (e.g. "iso-8859-1" pages with curly quotes in 0x80-0x9F: newspaper4k #687).
_SUPERSETS = {
    "latin-1": "cp1252", "iso8859-1": "cp1252", "ascii": "cp1252", "iso8859-9": "cp1254",
    "iso8859-11": "cp874", "tis-620": "cp874", "shift_jis": "cp932", "euc_kr": "cp949",
    "gb2312": "gb18030", "gbk": "gb18030",
}
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_html(body: bytes, content_type: str | None) -> str:
    """The page as text: BOM, header charset, <meta> charset, then detection; never raises."""
    return body.decode(page_encoding(body, content_type), errors="replace")


def page_encoding(body: bytes, content_type: str | None) -> str:
    """The codec a page is read with (see `decode_html`)."""
    # Written by hand: w3lib.encoding does this but is not a dependency; trafilatura's own
    # decode_file ignores the HTTP header and the <meta> declaration.
    bom = next((name for mark, name in _BOMS if body.startswith(mark)), None)
    declared = bom or _codec(_search(_HEADER_CHARSET, content_type or "")) or _codec(
        _search(_META_CHARSET, body[:_META_SCAN_BYTES]))
    if declared and not bom and declared != "utf-8" and not body.isascii() and _is_utf8(body):
        # Non-ASCII bytes that happen to form valid UTF-8 are vanishingly rare in legacy
        # encodings: the declaration is the CMS template's, the text is UTF-8.
        declared = "utf-8"
    if declared is None:
        declared = "utf-8" if _is_utf8(body) else _detect(body)
    return declared


def _search(pattern: re.Pattern[Any], text: str | bytes) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    value = match[1]
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _codec(label: str | None) -> str | None:
    """Python's codec for a charset label (WHATWG supersets applied), None if unknown."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().lower()).name
    except LookupError:
        return None
    # A page that could be read as ASCII cannot really be UTF-16, whatever its <meta> says.
    return "utf-8" if name.startswith("utf-16") else _SUPERSETS.get(name, name)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _detect(body: bytes) -> str:
    """The encoding charset-normalizer finds most likely, cp1252 when it finds none."""
    best = from_bytes(body).best()
    return _codec(best.encoding) if best is not None and _codec(best.encoding) else "cp1252"


# --- parsing --------------------------------------------------------------------------------

# What trafilatura's load_html removes before parsing (its INVALID_XML_CHARS): C0 controls other
# than tab, LF and CR, and the non-characters U+FFFE and U+FFFF. In UTF-8 a C0 byte is always that
# character (never part of a longer sequence), so deleting the bytes deletes the characters.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_NONCHARACTERS = ("\ufffe".encode(), "\uffff".encode())
_DOCTYPE_TAG = re.compile(DOCTYPE_TAG.pattern.encode(), re.IGNORECASE)
_FAULTY_HTML = re.compile(FAULTY_HTML.pattern.encode(), re.IGNORECASE)


def _html_parser() -> Any:
    """trafilatura's parser (its options, by `copy`), with lxml.html's element classes looked up in C.

    Written by hand because lxml.html's parser picks each element's class with a Python callback
    (`HtmlElementClassLookup.lookup`), run every time lxml makes a Python object for an element:
    thousands of times a page in trafilatura's XPath pruning and tree walks. lxml's own C lookups
    (classes by tag name, else the default HTML classes) give every element the same class
    (tests/test_extract.py checks, element by element) and made trafilatura's run on a parsed
    page ~4% faster (600 bench pages, interleaved, the outputs identical).
    """
    lookup = etree.ElementNamespaceClassLookup(etree.ElementDefaultClassLookup(
        element=lxml.html.HtmlElement, comment=lxml.html.HtmlComment,
        pi=lxml.html.HtmlProcessingInstruction, entity=lxml.html.HtmlEntity))
    lookup.get_namespace(None).update(lxml.html.HtmlElementClassLookup._default_element_classes)
    parser = HTML_PARSER.copy()
    parser.set_element_class_lookup(lookup)
    return parser


_HTML_PARSER = _html_parser()


def parse_html(body: bytes, content_type: str | None = None, encoding: str | None = None) -> Any:
    """The page's lxml tree: the tree trafilatura's load_html builds from `decode_html`'s text.
    `encoding`: the page's codec (`page_encoding`), when the caller already has it.

    Written by hand because load_html takes text: it runs a regex over the whole decoded page to
    drop control characters, repairs two libxml2 pitfalls, and lxml encodes the text back to
    UTF-8 to parse it (1.6-2.7 ms a page here, with the decoding). A page in UTF-8 is parsed
    from its own bytes instead, with the same cleaning done on bytes (~1 ms a page less); other
    encodings go through their text, as before. tests/test_extract.py compares the two trees on
    the sample, the seed, edge cases and the extraction benchmark's pages, so a trafilatura
    upgrade that changes load_html fails there. None where load_html gives None.
    """
    encoding = encoding or page_encoding(body, content_type)
    if encoding == "utf-8" and (body.isascii() or _is_utf8(body)):
        data = body
    elif encoding == "utf-8-sig" and _is_utf8(body):
        data = body[len(codecs.BOM_UTF8):]
    else:
        data = body.decode(encoding, errors="replace").encode("utf-8")
    # load_html's checks and repairs, in its order, on bytes (`beginning` is its first 50 characters)
    beginning = data[:200].decode("utf-8", "ignore")[:50].lower()
    data = data.translate(None, _CONTROL_BYTES)
    for noncharacter in _NONCHARACTERS:
        if noncharacter in data:
            data = data.replace(noncharacter, b"")
    if "doctype" in beginning:  # libxml2 mis-parses a DOCTYPE with a slash (lxml bug 1955915)
        first, _, rest = data.partition(b"\n")
        data = _DOCTYPE_TAG.sub(b"", first, count=1) + b"\n" + rest
    for line in data[:4096].splitlines()[:4]:
        if b"<html" in line and line.endswith(b"/>"):  # a self-closing <html/>
            data = _FAULTY_HTML.sub(rb"\1>", data, count=1)
            break
    try:
        tree = lxml.html.fromstring(data, parser=_HTML_PARSER)
    except (etree.ParserError, ValueError):  # "Document is empty" and the like
        return None
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None  # not HTML at all (load_html's rejection test)
    return tree


# --- extraction -----------------------------------------------------------------------------

# trafilatura options, named so the bench can compare them and extractor_version can say which
# were used. Measured on the 88-page aeb-dev set (`bench/extraction_quality.py --compare`,
# with metadata, decode_html included; ~55 CPU ms/page here):
#   precision           favor_precision, no comments  P 0.965 R 0.973 F1 0.969  <- chosen
#   precision-notables  same, tables dropped          P 0.961 R 0.959 F1 0.960
#   balanced            no comments                   P 0.947 R 0.974 F1 0.961
#   fast                fast, no comments             P 0.948 R 0.976 F1 0.961
#   recall              favor_recall, no comments     P 0.944 R 0.974 F1 0.959
#   default             trafilatura defaults          P 0.941 R 0.974 F1 0.957
# (FIELD.md, all 181 pages: precision 0.964, fast 0.962, default 0.953.)
PROFILES: dict[str, dict[str, Any]] = {
    "precision": {"favor_precision": True, "include_comments": False},
    "precision-notables": {"favor_precision": True, "include_comments": False, "include_tables": False},
    "balanced": {"include_comments": False},
    "recall": {"favor_recall": True, "include_comments": False},
    "fast": {"fast": True, "include_comments": False},
    "default": {},
}
SETTINGS_TAG = "precision"
# The cascade around trafilatura (see `extract_body`): bump when its rules change, so that
# `--reextract` upgrades rows extracted by an older one.
CASCADE_VERSION = "c6"  # c4: free_access; c5: language detected where the page declares none, tdm_reserved;
# c6: a readability summary's blocks each start a line (`_summary_text`)
EXTRACTOR_VERSION = f"trafilatura-{trafilatura.__version__}+{SETTINGS_TAG}+{CASCADE_VERSION}"


def extract_page(page: str | bytes, url: str, profile: str = SETTINGS_TAG,
                 boilerplate: frozenset[str] = frozenset(), header: Callable[[str], str | None] | None = None,
                 content_type: str | None = None) -> Extracted | None:
    """Main text and metadata of one page; None when no main text is found.

    `page` is the page's text, or its bytes as served (read with `content_type`'s charset, else
    the page's own: `decode_html`). `boilerplate` holds the `line_key`s of lines this page's site
    repeats across its stored articles (`tasks.load.site_boilerplate`); they are removed from the
    body. `header` gives the HTTP response's headers by name, where the page was fetched.
    """
    if isinstance(page, bytes):
        # the codec found once: for a page that declares none, finding it runs charset detection
        encoding = page_encoding(page, content_type)
        tree = parse_html(page, encoding=encoding)
        text_of_page = partial(page.decode, encoding, "replace")  # only readability-lxml reads it
    else:
        tree = load_html(page)
        text_of_page = lambda: page  # noqa: E731
    if tree is None:
        return None
    _side_runs.readability = None
    # Returns None (not an error) on pages it cannot use, including ones nested so deeply that
    # libxml2 gives up building the tree: the caller counts those as "no-text".
    doc = bare_extraction(tree, url=url, with_metadata=True, **PROFILES[profile])
    if doc is None or not (doc.text or "").strip():
        return None
    ld = jsonld_article(tree)
    text, steps = extract_body(tree, doc, text_of_page, ld, boilerplate, _side_runs.readability)
    if not text.strip():
        return None
    meta = page_metadata(tree, doc, ld, url)
    free_access, access_source = declared_access(tree, ld)
    language, language_source = page_language(tree, doc, text)
    tdm_reserved, tdm_source = declared_tdm(tree, header("tdm-reservation") if header else None)
    sources = {**meta.sources, "free_access": access_source, "language": language_source, "tdm_reserved": tdm_source}
    sources = {k: v for k, v in sources.items() if v}
    return Extracted(
        text=text,
        word_count=word_count(text),
        title=doc.title,
        authors=meta.authors,
        date=meta.date,
        site_name=doc.sitename,
        description=doc.description,
        categories=tuple(doc.categories or ()),
        tags=tuple(doc.tags or ()),
        image=doc.image,
        language=language,
        canonical_link=_canonical_link(tree, doc.url, url),
        extractor_version=f"trafilatura-{trafilatura.__version__}+{profile}+{CASCADE_VERSION}",
        field_sources=tuple(sorted(sources.items())),
        free_access=free_access,
        tdm_reserved=tdm_reserved,
        extraction_settings=json.dumps({"profile": profile, **PROFILES[profile], "steps": steps},
                                       sort_keys=True, separators=(",", ":")),
    )


# --- the body: trafilatura, checked against a second extractor and structured data ---------

# readability-lxml runs only when the page holds much more text than the body: it costs almost
# as much as trafilatura itself.
# Truncation: trafilatura's text lies inside readability's, which is this many times longer.
TRUNCATED_RATIO = 1.5
# ... and inside means at least this share of trafilatura's shingles are in readability's.
CONTAINED = 0.9
# readability is evidence only when it found the same article: this share of trafilatura's
# shingles in its output; below it, it picked another block of the page.
SAME_ARTICLE = 0.5
# readability drops these elements anyway, but parses them first, up to three times (its retry
# loop): removing them from the string beforehand halves its cost on script-heavy news pages.
_SCRIPTS = re.compile(r"<(script|style|svg|noscript)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# A body is in doubt (truncated?) when the page holds this many times its words in <p>
# elements; readability-lxml runs when it holds SECOND_RUN_RATIO times. Swept on aeb-dev with
# `bench/extraction_quality.py` (F1; readability-lxml runs of 88 pages): doubt 1.5 with no
# second run 0.970 (0); 1.5/2.0 0.973 (5); 1.2/2.5 0.973 (2); 1.2/2.0 0.976 (5); 1.2/1.2
# 0.976 (27). Readability-lxml on every doubtful page (the cascade before trafilatura's own
# summary was reused) scored the same 0.976 at 0.72x trafilatura's speed.
DOUBT_RATIO = 1.2
SECOND_RUN_RATIO = 2.0
_BLOCK_TAGS = frozenset("p h1 h2 h3 h4 h5 h6 li blockquote pre tr dd dt figcaption".split())


def extract_body(tree: Any, doc: Any, text_of_page: Callable[[], str], ld: dict[str, Any],
                 boilerplate: frozenset[str], summary: Any = None) -> tuple[str, list[str]]:
    """The body text and the cascade steps that shaped it (recorded in `extraction_settings`).

    `text_of_page` gives the page's HTML as text, decoded only for readability-lxml.

    `summary` is readability's summary tree of the page when trafilatura already made one (see
    `_side_runs`): the cheap second opinion. readability-lxml itself runs only when there is
    none, or when the page holds so much more paragraph text than the body (SECOND_RUN_RATIO)
    that truncation is likely and the cheap opinion did not show it.
    """
    rendered = _blocks(doc.body)
    blocks = drop_known(rendered, boilerplate)
    steps = ["boilerplate"] if blocks != rendered else []
    blocks = _drop_title(blocks, doc.title)
    body = ld.get("articleBody") if isinstance(ld.get("articleBody"), str) else ""
    text = "\n".join(b.text for b in blocks)
    ratio = _paragraph_words(tree) / max(1, len(text.split()))
    in_doubt = ratio >= DOUBT_RATIO  # may be truncated
    own = shingles(text) if body or in_doubt else set()
    stated = shingles(body)  # empty without a JSON-LD articleBody
    if not (in_doubt or (body and _disputed(own, stated))):
        return text, steps
    words = n_words(blocks)
    opinions: list[tuple[str, Callable[[], str]]] = []
    if summary is not None:
        opinions.append(("readability", partial(_summary_text, summary)))
    if summary is None or ratio >= SECOND_RUN_RATIO:
        opinions.append(("readability-lxml", lambda: _readability_text(text_of_page())))
    evidence = set(stated)
    for name, opinion in opinions:
        second = opinion()
        theirs = shingles(second)
        shared = _share(own, theirs)
        if second and shared >= CONTAINED and len(tokens(second)) >= TRUNCATED_RATIO * words:
            return second, [*steps, f"{name}:truncated"]
        if shared >= SAME_ARTICLE:
            evidence |= theirs
    trimmed = trim_edges(blocks, evidence) if evidence else blocks
    if len(trimmed) != len(blocks):
        steps.append("trimmed")
    return "\n".join(b.text for b in trimmed), steps


def _disputed(own: set[tuple[str, ...]], stated: set[tuple[str, ...]]) -> bool:
    """Whether the page's JSON-LD articleBody (its shingles, `stated`) and the extracted text disagree."""
    return _share(stated, own) < CONTAINED or _share(own, stated) < CONTAINED


def _paragraph_words(tree: Any) -> int:
    """Words (whitespace-separated) in the page's <p> elements: what a body that may be
    truncated is compared with."""
    return sum(len(p.text_content().split()) for p in tree.iter("p"))


def _share(own: set[tuple[str, ...]], other: set[tuple[str, ...]]) -> float:
    return len(own & other) / len(own) if own else 0.0


def _blocks(body: Any) -> list[Block]:
    """trafilatura's body as blocks, each rendered as trafilatura renders it."""
    result = []
    for child in body:
        wrapper = etree.Element("body")
        wrapper.append(deepcopy(child))
        text = xmltotxt(wrapper, include_formatting=False).strip()
        if text:
            result.append(Block(child.tag, text))
    return result


def _drop_title(blocks: list[Block], title: str | None) -> list[Block]:
    """`blocks` without a leading repeat of the headline: the headline is a field, not body text."""
    if blocks and title and tokens(blocks[0].text) == tokens(title):
        return blocks[1:]
    return blocks


def _readability_text(html: str) -> str:
    """readability-lxml's main text, one block per line; "" when it finds none."""
    try:
        summary = Document(_SCRIPTS.sub("", html)).summary(html_partial=True)
    except (Unparseable, ValueError, TypeError):  # readability's own failure, not ours
        return ""
    return _summary_text(lxml.html.fromstring(summary) if summary.strip() else None)


def _summary_text(root: Any) -> str:
    """A readability summary tree as text, one block per line (the tree is changed: pass a copy)."""
    if root is None:
        return ""
    for element in root.iter(*_BLOCK_TAGS, "br", "div"):
        element.tail = "\n" + (element.tail or "")
        if element.tag != "br":  # a block also starts a line: "<span>Local</span><h3>Council..."
            element.text = "\n" + (element.text or "")
    lines = (" ".join(line.split()) for line in root.text_content().splitlines())
    return "\n".join(line for line in lines if line)


# trafilatura runs its own port of readability on every page (`external.compare_extraction`,
# except in fast mode and for long recall-mode texts) and keeps the result only when it prefers
# it. Running readability-lxml again for the cascade cost ~20% of extraction time on news
# pages, so we keep a copy of trafilatura's. No public API returns it: we wrap the module
# function that `compare_extraction` looks up by name at call time. trafilatura is pinned in
# uv.lock; tests/test_extract.py fails if an upgrade stops calling the hook, and the cascade
# then falls back to running readability-lxml itself.
_side_runs = threading.local()
_try_readability = trafilatura.external.try_readability


def _remembering_readability(tree: Any) -> Any:
    summary = _try_readability(tree)
    if getattr(_side_runs, "readability", "") is None:  # the page's first pass, not a recall retry
        # a copy: trafilatura may adopt and clean the summary as the page's body
        _side_runs.readability = deepcopy(summary)
    return summary


trafilatura.external.try_readability = _remembering_readability


# --- metadata: structured data first, each field with its source ----------------------------

_ARTICLE_TYPES = re.compile(r"article|posting|report|story", re.IGNORECASE)


def jsonld_article(tree: Any) -> dict[str, Any]:
    """The page's JSON-LD article object (NewsArticle, BlogPosting...), {} when it has none."""
    found: list[dict[str, Any]] = []
    for script in tree.iterfind('.//script[@type="application/ld+json"]'):
        try:
            stack: list[Any] = [json.loads(script.text or "")]
        except ValueError:  # malformed JSON-LD is common and carries no evidence
            continue
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                kinds = item.get("@type")
                kinds = kinds if isinstance(kinds, list) else [kinds]
                if any(isinstance(k, str) and _ARTICLE_TYPES.search(k) for k in kinds):
                    found.append(item)
                stack.extend(v for k, v in item.items() if k in ("@graph", "mainEntity", "mainEntityOfPage"))
    # The one with a body, else the one with a date, else the first.
    found.sort(key=lambda a: (not isinstance(a.get("articleBody"), str), "datePublished" not in a))
    return found[0] if found else {}


# --- access: is the page behind a paywall? ---------------------------------------------------
#
# Only what the page declares, in the two standards publishers use for it: schema.org's
# isAccessibleForFree, which Google asks paywalled news to mark (on the article, or on the
# WebPageElement parts that are locked, `hasPart`), and Open Graph's `article:content_tier`
# (free / metered / locked). A metered page is counted as not free: past the reader's quota it is
# locked. A page that says nothing is None, not free: most pages say nothing either way. A
# refusal (HTTP 401/402/403) never reaches extraction; it is the fetch state `blocked`.
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_TIERS = {"free": True, "metered": False, "locked": False}


def declared_access(tree: Any, ld: dict[str, Any]) -> tuple[bool | None, str]:
    """(free_access, its source): False for a page its JSON-LD or meta tags mark paywalled,
    True for one marked free, (None, "") for one that says neither."""
    parts = ld.get("hasPart")
    parts = parts if isinstance(parts, list) else [parts]
    if any(isinstance(p, dict) and _flag(p.get("isAccessibleForFree")) is False for p in parts):
        return False, "json-ld"
    stated = _flag(ld.get("isAccessibleForFree"))
    if stated is not None:
        return stated, "json-ld"
    for meta in tree.xpath("//meta[@property='article:content_tier' or @name='article:content_tier']"):
        tier = _TIERS.get((meta.get("content") or "").strip().lower())
        if tier is not None:
            return tier, "meta"
    return None, ""


# Looked for in <head>, where HTML puts meta tags: a whole-tree search cost 0.16 ms a page.
_TDM_METAS = etree.XPath("head/meta[@name='tdm-reservation' or @name='robots' or @name='ROBOTS' or @name='Robots']")


def declared_tdm(tree: Any, header: str | None = None) -> tuple[bool | None, str]:
    """(tdm_reserved, its source): the TDM Reservation Protocol's `tdm-reservation` (1 reserved,
    0 not), from the HTTP header, which the protocol puts first, else from the page's meta tag;
    else True where a robots meta tag says `noai`; (None, "") where the page says nothing. The
    protocol's site-wide /.well-known/tdmrep.json is not read (a request of its own per site).
    `header`: the response's tdm-reservation header, if any."""
    stated = (header or "").strip()
    if stated in ("0", "1"):
        return stated == "1", "header"
    metas = _TDM_METAS(tree)
    for meta in metas:
        content = (meta.get("content") or "").strip()
        if meta.get("name") == "tdm-reservation" and content in ("0", "1"):
            return content == "1", "meta"
    if any("noai" in {d.strip().lower() for d in (m.get("content") or "").split(",")}
           for m in metas if m.get("name") != "tdm-reservation"):
        return True, "robots-meta"
    return None, ""


def _flag(value: object) -> bool | None:
    """A schema.org Boolean as pages write it: true, "True", "false", "False"... None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower().removeprefix("https://schema.org/").removeprefix("http://schema.org/")
        return True if word in _TRUE else False if word in _FALSE else None
    return None


# Meta tags that carry a publication timestamp (Open Graph article, Dublin Core, Parse.ly,
# Sailthru, schema.org microdata), in the order they are trusted.
_DATE_META = ("article:published_time", "og:published_time", "datepublished", "parsely-pub-date",
              "sailthru.date", "dc.date.issued", "dcterms.issued", "pubdate", "publishdate", "date")
# /2019/11/18/, /2019-11-18-, /20191118/ in a URL path: the day the CMS filed the story.
_URL_DAY = re.compile(r"(?<!\d)(20\d\d|19\d\d)[/_-]?(0[1-9]|1[0-2])[/_-]?(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True, slots=True)
class _Meta:
    authors: tuple[str, ...]
    date: str | None
    sources: dict[str, str]


def page_metadata(tree: Any, doc: Any, ld: dict[str, Any], url: str) -> _Meta:
    """Authors and publication time checked across JSON-LD, meta tags, trafilatura and the URL."""
    sources = {name: "trafilatura" for name in ("title", "site_name", "description", "image")
               if getattr(doc, name.replace("_", ""), None)}
    date, sources["date"] = _publication_time(tree, doc.date, ld, url)
    people = _ld_people(ld.get("author"))
    if people:
        authors, sources["authors"] = people, "json-ld"
    else:
        authors, sources["authors"] = ((doc.author,), "trafilatura") if doc.author else ((), "")
    return _Meta(authors, date, {k: v for k, v in sources.items() if v})


def _publication_time(tree: Any, found: str | None, ld: dict[str, Any], url: str) -> tuple[str | None, str]:
    """The publication time and its source: a full timestamp where one agrees with the day.

    trafilatura (htmldate) gives a bare day; JSON-LD and meta tags give a time and a zone but
    are sometimes the modification time or a template default. A timestamp is taken when its
    day (in its own zone) matches the URL's day, else trafilatura's; a day the URL contradicts
    by more than one day gives way to the URL.
    """
    stamps = [(s, _iso(v)) for s, v in (("json-ld", ld.get("datePublished")), *_meta_dates(tree))]
    stamps = [(s, v) for s, v in stamps if v is not None]
    url_day = _url_day(url)
    page_day = _iso(found).date() if _iso(found) else None
    if url_day and page_day and abs((page_day - url_day).days) > 1:
        page_day = None  # htmldate picked another date on the page (a related story, a copyright)
    reference = url_day or page_day
    for source, stamp in stamps:
        if reference is None or abs((stamp.date() - reference).days) <= (1 if reference is url_day else 0):
            return stamp.isoformat(), source
    if page_day is not None:
        return page_day.isoformat(), "trafilatura"
    return (url_day.isoformat(), "url") if url_day else (None, "")


def _meta_dates(tree: Any) -> list[tuple[str, str]]:
    """(source, value) of the timestamp meta tags and <time itemprop=datePublished>, trusted first."""
    values: dict[str, str] = {}
    for meta in tree.iterfind(".//meta[@content]"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").lower()
        if key in _DATE_META:
            values.setdefault(key, meta.get("content"))
    for time_el in tree.iterfind('.//time[@datetime]'):
        if (time_el.get("itemprop") or "").lower() == "datepublished":
            values.setdefault("datepublished", time_el.get("datetime"))
    return [("meta", values[k]) for k in _DATE_META if k in values]


def _iso(value: object) -> datetime | None:
    """An ISO 8601 date or timestamp (a trailing Z included); None for anything else."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _url_day(url: str) -> date | None:
    """The calendar day written in a URL's path, if there is a valid one."""
    match = _URL_DAY.search(urlsplit(url).path)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _ld_people(value: object) -> tuple[str, ...]:
    """Names of the Person authors in a JSON-LD `author` value (organisations are not authors)."""
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, str) and item.strip():
            names.append(item.strip())
        elif isinstance(item, dict) and item.get("@type", "Person") == "Person" and isinstance(item.get("name"), str):
            names.append(item["name"].strip())
    return tuple(n for n in names if n)


# A page that declares no language (8 of the 88 aeb-dev pages) gets the one py3langid (trafilatura's
# own optional detector; its model ships with it) finds in the first DETECT_CHARS of its body:
# 0.75 ms for 2,500 characters here. Pages that declare one are not checked: that would cost every
# page, and each extraction worker loads the 28 MB model on its first undeclared page, not before.
DETECT_CHARS = 2000
# Below this probability (py3langid's, normalised over its 97 languages) the language stays unknown.
DETECT_MIN_PROBABILITY = 0.9


def page_language(tree: Any, doc: Any, text: str) -> tuple[str | None, str]:
    """The page's language and where it came from: declared (trafilatura's metadata, else the
    <html lang> / meta tags), else detected in the text ("text"); (None, "") when neither."""
    if doc.language:
        return doc.language, "trafilatura"
    declared = _declared_language(tree)
    if declared:
        return declared, "html"
    detected = detected_language(text)
    return (detected, "text") if detected else (None, "")


def detected_language(text: str) -> str | None:
    """The language of `text` (an ISO 639-1 code), None when py3langid is not sure enough."""
    if not text.strip():
        return None
    language, probability = _language_identifier().classify(text[:DETECT_CHARS])
    return language if probability >= DETECT_MIN_PROBABILITY else None


@cache
def _language_identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _declared_language(tree: Any) -> str | None:
    """The language the page declares: <html lang>, else og:locale / content-language meta."""
    lang = tree.get("lang") or tree.get("xml:lang")
    if lang:
        return lang
    for meta in tree.iterfind(".//head//meta[@content]"):
        key = (meta.get("property") or meta.get("http-equiv") or meta.get("name") or "").lower()
        if key in ("og:locale", "content-language", "language"):
            return meta.get("content")
    return None


def _canonical_link(tree: Any, found: str | None, fetched: str) -> str | None:
    """The URL the page gives for itself (rel=canonical, og:url, JSON-LD), never just the fetched one."""
    # trafilatura's metadata URL falls back to the URL we passed in; only a URL the page states is a fact.
    return extract_url(tree, None) or (found if found and found != fetched else None)


# --- the worker side ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Job:
    """What a worker needs for one page: where its bytes are, not the bytes."""

    raw: RawRef
    url: str
    content_type: str | None
    max_bytes: int
    min_words: int
    boilerplate: frozenset[str] = frozenset()  # line keys of the site's learned furniture


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A terminal state a worker decided for a page."""

    state: State
    reason: str


def _extract_job(job: _Job) -> Extracted | _Verdict:
    """Read, decode and extract one page inside a worker process."""
    response = read_raw(job.raw)
    if len(response.body) > job.max_bytes:
        return _Verdict(State.SKIPPED, "too-large")
    extracted = extract_page(response.body, job.url, boilerplate=job.boilerplate, header=response.header,
                             content_type=job.content_type or response.header("content-type"))
    if extracted is None:
        return _Verdict(State.NOT_ARTICLE, "no-text")
    if (extracted.word_count or 0) < job.min_words:
        return _Verdict(State.NOT_ARTICLE, "too-short")
    [signature] = signatures([extracted.text])
    return replace(extracted, signature=None if signature is None else signature.astype("<u4").tobytes())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one item in the pool: a value, or the reason it failed."""

    value: Any = None
    error: str | None = None


TIMEOUT = "extract-timeout"


class _SoftTimeout(BaseException):
    """Raised by SIGALRM in a worker. A BaseException so that trafilatura's own broad
    `except Exception` handlers (e.g. around JSON-LD parsing) cannot swallow it."""


_armed = False


def _on_alarm(signum: int, frame: object) -> None:
    if _armed:
        raise _SoftTimeout


def _run_chunk(fn: Callable[[Any], Any], items: Sequence[Any], timeout: float) -> list[Outcome]:
    """Worker side: `fn` on each item, each under a soft SIGALRM time limit."""
    global _armed
    signal.signal(signal.SIGALRM, _on_alarm)
    outcomes = []
    for item in items:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        _armed = True
        try:
            outcomes.append(Outcome(value=fn(item)))
        except _SoftTimeout:
            outcomes.append(Outcome(error=TIMEOUT))
        except Exception as exc:  # an extractor bug fails its page, with the exception's name, not the batch
            outcomes.append(Outcome(error=f"extract-error:{type(exc).__name__}"))
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    return outcomes


def _warm() -> None:
    """No-op run once per worker so that process start and imports are not timed as extraction."""


def _end_with(owner: int) -> None:
    """Pool initializer: end this worker when the process that made the pool ends.

    Written by hand: ProcessPoolExecutor's workers wait on a queue whose writing end they hold
    themselves, so a parent killed outright (SIGKILL, the OOM killer, a cancelled deployment)
    left them, and the forkserver they keep alive, running for good: ~200 MB a killed run. A
    pidfd (Linux 5.3+) becomes readable when the process ends, without PID-reuse races; elsewhere
    the owner is polled.
    """
    threading.Thread(target=_watch_owner, args=(owner,), name="newsflow-owner-watch", daemon=True).start()


def _watch_owner(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):  # no pidfd here, or the owner is already gone
        while _alive(owner):
            time.sleep(OWNER_POLL_SECONDS)
    else:
        select.select([fd], [], [])
    os._exit(0)


OWNER_POLL_SECONDS = 2.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --- the parent side: one persistent pool ---------------------------------------------------

_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_pool_pages = 0  # items the current pool's workers have run (its age, for `recycle_after`)
# One batch at a time uses the pool: rebuilding it after a hang or crash must not pull the
# rug from under a concurrent batch (Prefect runs tasks in threads). They would share the
# CPUs anyway.
_pool_lock = threading.Lock()
# Chunks of pages per submit cut IPC overhead; smaller chunks for small batches keep every
# worker busy.
MAX_CHUNK = 12
# Chunks per worker in what remains of a batch (see `chunk_sizes`).
CHUNKS_AHEAD = 4
# A pool that breaks before it ran anything cannot start (no memory, no forkserver): after
# this many fresh ones, raise instead of spinning.
MAX_IDLE_RESTARTS = 3


def _context() -> Any:
    """forkserver where there is one (workers fork from a process that already imported
    trafilatura, so a rebuilt pool starts in milliseconds), spawn elsewhere. Never fork: the
    parent runs Prefect's threads."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _get_pool(workers: int) -> ProcessPoolExecutor:
    """The process pool, created on first use and kept for later batches."""
    global _pool, _pool_size, _pool_pages
    if _pool is None or _pool_size != workers:
        _discard_pool(kill=False)
        _pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(),
                                    initializer=_end_with, initargs=(os.getpid(),))
        _pool_size, _pool_pages = workers, 0
        wait([_pool.submit(_warm) for _ in range(workers)])
    return _pool


def _discard_pool(kill: bool) -> None:
    """Shut the pool down; with `kill`, end its processes first (a hung worker never returns)."""
    global _pool
    if _pool is None:
        return
    processes = list((getattr(_pool, "_processes", None) or {}).values())  # no public API before 3.14
    if kill:
        for process in processes:
            process.kill()
    _pool.shutdown(wait=not kill, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)
    _pool = None


def start_pool(workers: int) -> None:
    """Start the worker processes now rather than with the first batch (flows/startup.py)."""
    with _pool_lock:
        _get_pool(workers)


def shutdown_pool() -> None:
    """End the worker processes (tests, CLI exit); the next batch starts a new pool."""
    with _pool_lock:
        _discard_pool(kill=False)


def chunk_sizes(items: int, workers: int) -> list[int]:
    """How a batch of `items` is cut into chunks for `workers`: each chunk a CHUNKS_AHEAD-th of
    one worker's share of what is left, at most MAX_CHUNK, so chunks shrink to single pages at
    the batch's end ("guided" scheduling, as OpenMP calls it).

    Batches use the pool one at a time, so the workers that finish first wait for the batch's
    last chunk: with equal 12-page chunks that left a worker idle 0.15-0.24 s a batch, with
    these ~0.02 s (bench/pool_tail.py). Written here: concurrent.futures' `chunksize` is fixed,
    and this is one loop.
    """
    sizes, left = [], items
    while left:
        size = max(1, min(MAX_CHUNK, left // (max(1, workers) * CHUNKS_AHEAD)))
        sizes.append(size)
        left -= size
    return sizes


@dataclass(slots=True)
class _Chunk:
    indices: list[int]
    solo: bool = False  # run alone: it was in flight when a worker crashed


class _PoolRun:
    """One batch through the pool: keeps `workers` chunks in flight, fails only what hung or crashed."""

    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any], workers: int, timeout: float) -> None:
        self.fn, self.items, self.workers, self.timeout = fn, items, max(1, workers), timeout
        self.results: list[Outcome | None] = [None] * len(items)
        starts = accumulate(chunk_sizes(len(items), self.workers), initial=0)
        self.queue = deque(_Chunk(list(range(a, b))) for a, b in pairwise(starts))
        self.inflight: dict[Future[list[Outcome]], tuple[_Chunk, float]] = {}
        self.restarts = 0

    def run(self) -> list[Outcome]:
        while self.queue or self.inflight:
            self._fill()
            if not self.inflight:  # the pool broke as we submitted; _fill starts a new one
                continue
            deadline = min(d for _, d in self.inflight.values())
            done, _ = wait(self.inflight, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED)
            if [f for f in done if not self._collect(f)]:  # a list: every finished future is collected
                self._after_crash()
            elif not done:
                self._after_hang()
        return [r or Outcome(error=TIMEOUT) for r in self.results]

    def _fill(self) -> None:
        """Submit queued chunks while there is room; a solo chunk waits for an empty pool."""
        if not self.queue:
            return
        pool = _get_pool(self.workers)
        while self.queue and len(self.inflight) < self.workers:
            if any(c.solo for c, _ in self.inflight.values()) or (self.queue[0].solo and self.inflight):
                return
            chunk = self.queue.popleft()
            # A chunk's soft limits add up to len * timeout; the margin covers IPC and scheduling.
            deadline = time.monotonic() + self.timeout * len(chunk.indices) + max(2.0, self.timeout)
            items = [self.items[i] for i in chunk.indices]
            try:
                future = pool.submit(_run_chunk, self.fn, items, self.timeout)
            except BrokenProcessPool:
                # In-flight chunks will come back broken and be handled; with none, start afresh.
                self.queue.appendleft(chunk)
                if not self.inflight:
                    self._restart_empty_pool()
                return
            self.inflight[future] = (chunk, deadline)

    def _restart_empty_pool(self) -> None:
        """Discard a pool that broke with nothing in flight; give up if new ones keep breaking."""
        self.restarts += 1
        if self.restarts > MAX_IDLE_RESTARTS:
            raise RuntimeError("the extraction worker pool breaks as soon as it starts")
        _discard_pool(kill=True)

    def _collect(self, future: Future[list[Outcome]]) -> bool:
        """Record a finished chunk's outcomes; False if the pool broke under it (it stays in flight)."""
        chunk, _ = self.inflight[future]
        try:
            outcomes = future.result()
        except (BrokenProcessPool, CancelledError):  # lost with the pool, not through its own fault
            return False
        except Exception as exc:  # e.g. an unpicklable result: fails this chunk's pages, named
            outcomes = [Outcome(error=f"extract-error:{type(exc).__name__}")] * len(chunk.indices)
        for index, outcome in zip(chunk.indices, outcomes, strict=True):
            self.results[index] = outcome
        del self.inflight[future]
        return True

    def _drain(self) -> list[_Chunk]:
        """Wait out every in-flight future of a dead pool; the chunks it took down with it."""
        wait(self.inflight, timeout=30)
        lost = [chunk for f, (chunk, _) in list(self.inflight.items()) if not (f.done() and self._collect(f))]
        self.inflight.clear()
        return lost

    def _after_crash(self) -> None:
        """A worker died: isolate the culprit by rerunning what was in flight alone, then page by page."""
        alone = len(self.inflight) == 1
        for chunk in self._drain():
            if alone and len(chunk.indices) == 1:
                self.results[chunk.indices[0]] = Outcome(error="extract-error:BrokenProcessPool")
            elif alone:
                self.queue.extendleft(_Chunk([i], solo=True) for i in reversed(chunk.indices))
            else:
                self.queue.appendleft(_Chunk(chunk.indices, solo=True))
        log.warning("extraction worker crashed; rebuilding the pool")
        _discard_pool(kill=True)

    def _after_hang(self) -> None:
        """A chunk overran its hard deadline: kill the pool, fail that chunk, requeue the others."""
        now = time.monotonic()
        hung = {id(c) for c, d in self.inflight.values() if d <= now}
        _discard_pool(kill=True)
        for chunk in self._drain():
            if id(chunk) in hung:
                for index in chunk.indices:
                    self.results[index] = Outcome(error=TIMEOUT)
            else:
                self.queue.appendleft(chunk)
        log.warning("extraction worker hung past %.0f s a page; pool rebuilt", self.timeout)


def run_pool(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, timeout: float,
             recycle_after: int = 0) -> list[Outcome]:
    """`fn` over `items` in the persistent worker pool, one Outcome per item, in order.

    `fn` must be picklable (a module-level function). Each item gets `timeout` seconds: a soft
    limit in the worker, and a hard one here that kills the pool if a worker ignores it. With
    `recycle_after`, a pool whose workers have run that many items each is replaced by a fresh
    one before the batch starts (see `Settings.extract_worker_pages`).
    """
    global _pool_pages
    if not items:
        return []
    with _pool_lock:
        if recycle_after and _pool is not None and _pool_pages >= recycle_after * _pool_size:
            # Between batches nothing is in flight: the workers finish their queue and exit.
            _discard_pool(kill=False)
        outcomes = _PoolRun(fn, items, workers, timeout).run()
        _pool_pages += len(items)
        return outcomes


# --- the stage ------------------------------------------------------------------------------

def extract_batch(records: list[Article], settings: Settings, db: Path | str | None = None) -> list[Article]:
    """Extract every not-done record with archived raw bytes; done records pass through.

    With `db`, each page loses the lines its site repeats across the articles stored there.
    """
    todo = [i for i, r in enumerate(records) if not r.done and r.raw is not None]
    learned = _site_boilerplate(db, [records[i] for i in todo]) if db is not None else {}
    jobs = [_job(records[i], settings, learned) for i in todo]
    outcomes = run_pool(_extract_job, jobs, settings.extract_workers, settings.extract_timeout,
                        recycle_after=settings.extract_worker_pages)
    result = list(records)
    for index, outcome in zip(todo, outcomes, strict=True):
        result[index] = _apply(records[index], outcome)
    return result


def _site_boilerplate(db: Path | str, records: list[Article]) -> dict[str, frozenset[str]]:
    """The learned boilerplate of the batch's domains (imported here: workers never need DuckDB)."""
    from tasks.load import site_boilerplate

    return site_boilerplate(db, [domain_of(r.final_url or r.url) or "" for r in records])


def _job(record: Article, settings: Settings, learned: dict[str, frozenset[str]]) -> _Job:
    url = record.final_url or record.url
    return _Job(record.raw, url, record.content_type,  # type: ignore[arg-type]
                settings.max_page_bytes, settings.min_words, learned.get(domain_of(url) or "", frozenset()))


def _apply(record: Article, outcome: Outcome) -> Article:
    """The record with its extraction outcome: extracted data, or a terminal state."""
    if outcome.error is not None:
        return record.finish(State.FAILED, outcome.error)
    if isinstance(outcome.value, _Verdict):
        return record.finish(outcome.value.state, outcome.value.reason)
    return record.replace(extracted=outcome.value)
