"""Regenerate the bundled sample corpus that `newsflow ingest` uses when no source is given.

    uv run python data/sample/make_sample.py [--out DIR]

Reads the article texts from `src/<outlet>/*.txt` (written for this project: fictional outlets
under the reserved `.example` TLD, fictional people and places) and renders every page through
its outlet's template, with the furniture real news sites carry (cookie banners, nav, share bars,
ads, newsletter boxes, related stories, comments, footers). Writes, under the output directory:

    site/<host>/<path>.html   each page as served (the cp1251 page in cp1251)
    sample.warc.gz            a warcinfo record, then one response record per page, sorted by URL
    feed.xml                  RSS 2.0 over the article pages
    sitemap.xml               a Google News sitemap over all pages
    manifest.json             one entry per page: what tests may expect of it

The output is deterministic (fixed dates, sorted order, record ids derived from the URL), so a
rerun reproduces every file byte for byte. Standard library and warcio only.

Source file format: `key: value` header lines (keys may repeat: `comment`, `wire_edit`), a blank
line, then paragraphs separated by blank lines. See src/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
# Every response record carries this crawl time (plus a few seconds per record), so reruns match.
CRAWL_START = datetime(2026, 11, 20, 6, 0, 0, tzinfo=UTC)
WARC_NAME = "sample.warc.gz"


# --------------------------------------------------------------------------- the page model

@dataclass(frozen=True, slots=True)
class Page:
    """One page of the corpus, as read from its source file (and its wire story, if any)."""

    url: str
    outlet: str
    kind: str  # article | section | contact
    title: str
    section: str
    published: datetime
    paragraphs: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    byline: str = ""
    keywords: tuple[str, ...] = ()
    description: str = ""
    image: str = ""
    caption: str = ""
    comments: tuple[tuple[str, str, str], ...] = ()  # (name, when, text)
    jsonld: bool = True
    meta: bool = True
    wire_id: str = ""
    wire_variant: str = ""
    language: str = "en"
    charset: str = "utf-8"

    @property
    def is_article(self) -> bool:
        return self.kind == "article"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def file(self) -> str:
        """Where the page is written under the output directory (what a loopback server serves)."""
        path = self.path.strip("/") or "index"
        return f"site/{self.host}/{path if path.endswith('.html') else path + '.html'}"

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


def parse_source(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Header fields (each a list, keys may repeat) and body paragraphs of one source file."""
    head, _, body = text.partition("\n\n")
    fields: dict[str, list[str]] = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line: {line!r}")
        fields.setdefault(key.strip(), []).append(value.strip())
    paragraphs = [" ".join(block.split()) for block in body.split("\n\n") if block.strip()]
    return fields, paragraphs


def _one(fields: dict[str, list[str]], key: str, default: str = "") -> str:
    return fields.get(key, [default])[0]


def _split(value: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(sep) if v.strip())


def _first_sentence(paragraph: str, limit: int = 200) -> str:
    """A standfirst-like description: the first sentence of the story, shortened if long."""
    sentence = paragraph.split(". ")[0].rstrip(".") + "."
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def _comment(value: str) -> tuple[str, str, str]:
    name, when, text = (part.strip() for part in value.split("|", 2))
    return name, when, text


def _apply_wire(fields: dict[str, list[str]], local: list[str]) -> tuple[list[str], str]:
    """The carried story: the agency text, trimmed, edited or with local paragraphs on top."""
    wire_fields, paragraphs = parse_source((SRC / "wire" / f"{fields['wire'][0]}.txt").read_text("utf-8"))
    trim = int(_one(fields, "wire_trim", "0"))
    if trim:
        paragraphs = paragraphs[:-trim]
    for edit in fields.get("wire_edit", []):
        old, new = (part.strip() for part in edit.split("=>"))
        if not any(old in p for p in paragraphs):
            raise ValueError(f"wire edit {old!r} matches nothing")
        paragraphs = [p.replace(old, new, 1) for p in paragraphs]
    return local + paragraphs, _one(wire_fields, "wire_id")


def load_page(path: Path) -> Page:
    """A Page from one source file."""
    fields, paragraphs = parse_source(path.read_text("utf-8"))
    wire_id = variant = ""
    if "wire" in fields:
        local = paragraphs
        paragraphs, wire_id = _apply_wire(fields, local)
        variant = ("trimmed" if "wire_trim" in fields else "edited" if "wire_edit" in fields
                   else "local_intro" if local else "verbatim")
    authors = _split(_one(fields, "authors"), ";")
    return Page(
        url=_one(fields, "url"), outlet=path.parent.name, kind=_one(fields, "kind", "article"),
        title=_one(fields, "title"), section=_one(fields, "section"),
        published=datetime.fromisoformat(_one(fields, "published")),
        paragraphs=tuple(paragraphs), authors=authors,
        byline=_one(fields, "byline") or ("By " + " and ".join(authors) if authors else ""),
        keywords=_split(_one(fields, "keywords")),
        description=_one(fields, "description") or (_first_sentence(paragraphs[0]) if paragraphs else ""),
        image=_one(fields, "image"), caption=_one(fields, "caption"),
        comments=tuple(_comment(c) for c in fields.get("comment", [])),
        jsonld=_one(fields, "jsonld", "yes") == "yes", meta=_one(fields, "meta", "yes") == "yes",
        wire_id=wire_id, wire_variant=variant,
        language=_one(fields, "language", "en"), charset=_one(fields, "charset", "utf-8"),
    )


def load_pages(src: Path = SRC) -> list[Page]:
    """Every page of every outlet, sorted by URL."""
    pages = [load_page(p) for outlet in OUTLETS for p in sorted((src / outlet).glob("*.txt"))]
    urls = [p.url for p in pages]
    if len(set(urls)) != len(urls):
        raise ValueError("two source files share a URL")
    return sorted(pages, key=lambda p: p.url)


# --------------------------------------------------------------------------- shared HTML pieces

def esc(text: str) -> str:
    """Text-node escaping (quotes stay as typed, as most CMSs leave them)."""
    return html.escape(text, quote=False)


def attr(text: str) -> str:
    return html.escape(text, quote=True)


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def meta_tags(page: Page, site_name: str, locale: str = "en_GB") -> str:
    """OpenGraph, article:* and author/description meta, as most CMS themes emit them."""
    tags = [("name", "description", page.description)]
    if page.meta:
        tags += [("name", "author", ", ".join(page.authors))] if page.authors else []
        tags += [("property", "og:type", "article"), ("property", "og:title", page.title),
                 ("property", "og:description", page.description), ("property", "og:url", page.url),
                 ("property", "og:site_name", site_name), ("property", "og:locale", locale)]
        tags += [("property", "og:image", page.image)] if page.image else []
        tags += [("property", "article:published_time", iso(page.published)),
                 ("property", "article:section", page.section)]
        tags += [("property", "article:tag", k) for k in page.keywords]
        tags += [("name", "twitter:card", "summary_large_image")]
    return "\n".join(f'<meta {kind}="{attr(key)}" content="{attr(value)}">' for kind, key, value in tags)


def news_article(page: Page, publisher: str, logo: str, author_type: str = "Person") -> dict[str, object]:
    """The schema.org NewsArticle object for a page."""
    data: dict[str, object] = {
        "@context": "https://schema.org", "@type": "NewsArticle",
        "mainEntityOfPage": {"@type": "WebPage", "@id": page.url},
        "headline": page.title, "description": page.description,
        "datePublished": iso(page.published),
        "dateModified": iso(page.published + timedelta(minutes=47)),
        "author": [{"@type": author_type, "name": a} for a in page.authors],
        "publisher": {"@type": "Organization", "name": publisher,
                      "logo": {"@type": "ImageObject", "url": logo}},
        "articleSection": page.section, "keywords": list(page.keywords),
        "inLanguage": page.language, "isAccessibleForFree": True,
    }
    if page.image:
        data["image"] = [page.image]
    return data


def ld_script(data: object) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=1).replace("</", "<\\/")
    return f'<script type="application/ld+json">\n{text}\n</script>'


def paragraphs_html(page: Page, every: int = 0, insert: str = "") -> str:
    """The body paragraphs, with `insert` (an ad slot, a read-more box) after every `every`."""
    out = []
    for i, p in enumerate(page.paragraphs, 1):
        out.append(f"<p>{esc(p)}</p>")
        if every and i % every == 0 and i < len(page.paragraphs):
            out.append(insert)
    return "\n".join(out)


def share_links(page: Page, labels: Iterable[str]) -> str:
    u = quote(page.url, safe="")
    targets = {"Facebook": f"https://www.facebook.com/sharer/sharer.php?u={u}",
               "X": f"https://x.com/intent/post?url={u}", "Twitter": f"https://twitter.com/intent/tweet?url={u}",
               "LinkedIn": f"https://www.linkedin.com/sharing/share-offsite/?url={u}",
               "WhatsApp": f"https://wa.me/?text={u}", "Email": f"mailto:?subject={quote(page.title)}&body={u}",
               "ВКонтакте": f"https://vk.com/share.php?url={u}", "Telegram": f"https://t.me/share/url?url={u}"}
    return "\n".join(f'<li><a class="share-{slug(label)}" href="{attr(targets[label])}" rel="noopener" '
                     f'target="_blank">{esc(label)}</a></li>' for label in labels)


def nav(items: Iterable[tuple[str, str]], current: str = "") -> str:
    active = ' class="active"'
    return "\n".join(f'<li{active if label == current else ""}><a href="{attr(href)}">{esc(label)}</a></li>'
                     for label, href in items)


def comments_html(page: Page, heading: str, reply: str = "Reply", report: str = "Report") -> str:
    items = "\n".join(
        f'<li class="comment" id="comment-{i}"><div class="comment-meta"><span class="comment-author">'
        f'{esc(name)}</span> <span class="comment-time">{esc(when)}</span></div>'
        f'<div class="comment-body"><p>{esc(text)}</p></div>'
        f'<div class="comment-actions"><a href="#reply-{i}">{reply}</a> <a href="#report-{i}">{report}</a></div></li>'
        for i, (name, when, text) in enumerate(page.comments, 1))
    return f'<h2 class="comments-title">{heading} ({len(page.comments)})</h2>\n<ol class="comment-list">\n{items}\n</ol>'


def related(page: Page, pages: list[Page], n: int = 3) -> list[Page]:
    """The next `n` articles of the same outlet, in URL order (a stand-in for a CMS's picks)."""
    same = [p for p in pages if p.outlet == page.outlet and p.is_article]
    if page not in same:
        return same[:n]
    i = same.index(page)
    return [same[(i + k) % len(same)] for k in range(1, n + 1) if same[(i + k) % len(same)] != page]


def link_list(pages: Iterable[Page], extra: Callable[[Page], str] = lambda p: "") -> str:
    return "\n".join(f'<li><a href="{attr(p.path)}">{esc(p.title)}</a>{extra(p)}</li>' for p in pages)


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
RU_MONTHS = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября",
             "октября", "ноября", "декабря"]


def us_time(dt: datetime) -> str:
    hour = dt.hour % 12 or 12
    return f"{hour}:{dt.minute:02d} {'a.m.' if dt.hour < 12 else 'p.m.'}"


# --------------------------------------------------------------------------- outlet templates

def harbour(page: Page, pages: list[Page]) -> str:
    """The Harbour Gazette: a regional broadsheet (Guardian-like dateline, comments, ad slots)."""
    site = "The Harbour Gazette"
    sections = [("Home", "/"), ("Local", "/local"), ("Politics", "/politics"), ("Business", "/business"),
                ("Sport", "/sport"), ("Culture", "/culture"), ("Science", "/science"), ("Obituaries", "/obituaries")]
    dt = page.published
    head_extra = ""
    if page.is_article:
        head_extra = meta_tags(page, site) + ("\n" + ld_script(news_article(page, site, "https://www.harbourgazette.example/static/logo-600.png")) if page.jsonld else "")
        main = f"""<article class="story" itemscope>
<p class="kicker"><a href="/{slug(page.section)}">{esc(page.section)}</a></p>
<h1 class="headline">{esc(page.title)}</h1>
<div class="meta"><span class="byline">{_harbour_byline(page)}</span>
<time class="dateline" datetime="{iso(dt)}">{dt:%a} {dt.day} {dt:%b %Y %H.%M} GMT</time></div>
<ul class="share-bar" aria-label="Share this story">
{share_links(page, ["Facebook", "X", "WhatsApp", "Email"])}
<li><button class="copy-link" data-url="{attr(page.url)}">Copy link</button></li>
</ul>
{_figure(page)}
<div class="article-body">
{paragraphs_html(page, 4, '<aside class="ad-slot ad-inline" data-slot="mpu"><span>Advertisement</span><p class="ad-label">Article continues below this advertisement</p></aside>')}
</div>
<p class="topics">Topics: {" · ".join(f'<a href="/topic/{slug(k)}">{esc(k)}</a>' for k in page.keywords)}</p>
</article>
<aside class="newsletter-signup">
<h2>Get the Gazette Morning Briefing</h2>
<p>The day's Port Carrow and Firth coast news, in your inbox before 7am.</p>
<form action="/newsletters/subscribe" method="post"><label for="nl-email">Email address</label>
<input id="nl-email" type="email" name="email" placeholder="you@example.com"><button type="submit">Sign me up</button></form>
<p class="small">By signing up you agree to our <a href="/privacy">privacy notice</a>. You can unsubscribe at any time.</p>
</aside>
<section class="related-stories"><h2>More on this story</h2><ul>
{link_list(related(page, pages))}
</ul></section>
<section id="comments" class="comments">
{comments_html(page, "Comments") if page.comments else '<h2 class="comments-title">Comments (0)</h2><p>Be the first to comment.</p>'}
<p class="house-rules">Comments are moderated according to our <a href="/community-standards">community standards</a>. Sign in to join the conversation.</p>
</section>"""
    else:
        listed = [p for p in pages if p.outlet == page.outlet and p.is_article and p.section == page.section]
        main = f"""<section class="section-front"><h1 class="section-title">{esc(page.section)}</h1>
<ul class="story-list">
{link_list(listed, lambda p: f' <span class="when">{p.published.day} {p.published:%b}</span>')}
</ul>
<nav class="pagination"><a href="{attr(page.path)}?page=2">Older stories</a></nav></section>"""
    title = f"{page.title} | {site}" if page.is_article else f"{page.section} news | {site}"
    return f"""<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="canonical" href="{attr(page.url)}">
{head_extra}
<link rel="stylesheet" href="/static/css/gazette.4f2a.css">
<link rel="alternate" type="application/rss+xml" title="{site}" href="/rss">
<script async src="/static/js/consent.js"></script>
</head>
<body class="hg {"article" if page.is_article else "section"}">
<div id="cookie-banner" class="cookie-banner" role="dialog" aria-label="Cookie consent">
<p>We and our partners use cookies to personalise content and adverts and to understand how you use our site. You can change your choices at any time.</p>
<button class="accept">Accept all</button> <button class="reject">Reject all</button> <a href="/privacy#cookies">Manage preferences</a>
</div>
<header class="masthead">
<a class="logo" href="/"><img src="/static/img/gazette-logo.svg" alt="{site}"></a>
<p class="tagline">News for Port Carrow and the Firth coast since 1871</p>
<p class="today">{dt:%A} {dt.day} {dt:%B %Y}</p>
<a class="subscribe" href="/subscribe">Subscribe from £1 a week</a> <a class="sign-in" href="/account">Sign in</a>
<nav class="primary" aria-label="Sections"><ul>
{nav(sections, page.section)}
</ul></nav>
</header>
<div class="ad-slot ad-leaderboard" data-slot="top"><span>Advertisement</span></div>
<main id="content">
{main}
</main>
<aside class="most-read"><h2>Most read</h2><ol>
{link_list(related(page, pages, 5))}
</ol></aside>
<footer class="site-footer">
<ul class="footer-links"><li><a href="/about">About us</a></li><li><a href="/contact">Contact the newsroom</a></li><li><a href="/advertise">Advertise</a></li><li><a href="/privacy">Privacy</a></li><li><a href="/terms">Terms</a></li><li><a href="/corrections">Corrections</a></li></ul>
<p>The Harbour Gazette is a member of the Independent Press Standards Organisation. © 2026 Harbour Gazette Media Ltd, 12 Quay Street, Port Carrow.</p>
</footer>
</body>
</html>
"""


def _harbour_byline(page: Page) -> str:
    if not page.authors:
        return esc(page.byline)
    names = " and ".join(f'<a rel="author" href="/profile/{slug(a)}">{esc(a)}</a>' for a in page.authors)
    rest = page.byline.split(", ", 1)[1] if ", " in page.byline else ""
    return f"By {names}" + (f", {esc(rest)}" if rest else "")


def _figure(page: Page, cls: str = "lead-image") -> str:
    if not page.image:
        return ""
    return (f'<figure class="{cls}"><img src="{attr(page.image)}" alt="{attr(page.caption.split(" (")[0])}" '
            f'width="1200" height="675" loading="eager">'
            f'<figcaption>{esc(page.caption)}</figcaption></figure>')


def ledger(page: Page, pages: list[Page]) -> str:
    """Northfield Ledger: a US metro daily (metered paywall notice, @graph JSON-LD, no comments)."""
    site = "Northfield Ledger"
    sections = [("News", "/news"), ("Business", "/business"), ("Politics", "/politics"), ("Sports", "/sports"),
                ("Science", "/science"), ("Arts", "/arts"), ("Opinion", "/opinion"), ("Obituaries", "/obituaries"),
                ("e-Edition", "/e-edition")]
    dt = page.published
    tz = {-6: "CST", -5: "CDT"}.get(int(dt.utcoffset().total_seconds() // 3600), "UTC")  # type: ignore[union-attr]
    stamp = f"{MONTHS[dt.month - 1][:3]}. {dt.day}, {dt.year} {us_time(dt)} {tz}"
    head_extra = ""
    if page.is_article:
        head_extra = meta_tags(page, site, "en_US")
        if page.jsonld:
            article = news_article(page, site, "https://www.northfieldledger.example/img/ledger-logo.png")
            article.pop("@context")
            graph = {"@context": "https://schema.org", "@graph": [
                {"@type": "WebPage", "@id": page.url, "url": page.url, "name": page.title,
                 "isPartOf": {"@id": "https://www.northfieldledger.example/#website"}},
                {"@type": "WebSite", "@id": "https://www.northfieldledger.example/#website", "name": site},
                article]}
            head_extra += "\n" + ld_script(graph)
        byline = esc(page.byline)
        main = f"""<article class="article">
<div class="paywall-meter" role="status">You have 3 free articles remaining this month. <a href="/subscribe">Subscribe for 99¢</a></div>
<div class="section-label"><a href="/{slug(page.section)}">{esc(page.section)}</a></div>
<h1 class="article-headline">{esc(page.title)}</h1>
<div class="article-byline"><p class="author">{byline}</p>
<p class="timestamp">Published {stamp}</p></div>
<div class="tools"><span>Share</span><ul class="share">
{share_links(page, ["Facebook", "Twitter", "LinkedIn", "Email"])}
<li><a href="javascript:window.print()">Print</a></li></ul>
<a class="gift" href="/gift?u={quote(page.url, safe='')}">Gift this article</a></div>
{_figure(page, "article-photo")}
<div class="article-body" data-words="{page.words}">
{paragraphs_html(page, 3, '<div class="ad-slot" data-ad="in-article"><p>ADVERTISEMENT</p></div>')}
</div>
<p class="contact-note">Have a news tip? Email <a href="mailto:tips@northfieldledger.example">tips@northfieldledger.example</a>.</p>
</article>
<section class="more-coverage"><h2>Related coverage</h2><ul>
{link_list(related(page, pages))}
</ul></section>
<aside class="newsletter"><h3>Ledger Business Brief</h3><p>Local business news, every weekday at noon.</p>
<form action="/newsletters" method="post"><input type="email" name="email" placeholder="Email address"><button>Subscribe</button></form>
<p class="fine-print">This site is protected by reCAPTCHA. By subscribing you agree to our Terms of Use.</p></aside>
<div class="comments-closed"><p>Comments are not available on this story.</p></div>"""
        title = f"{page.title} - {site}"
    else:
        main = f"""<section class="static-page"><h1>{esc(page.title)}</h1>
{"".join(f"<p>{esc(p)}</p>" for p in page.paragraphs)}
</section>"""
        title = f"{page.title} | {site}"
    return f"""<!doctype html>
<html lang="en-US">
<head>
<meta charset="UTF-8">
<title>{esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="canonical" href="{attr(page.url)}">
{head_extra}
<link rel="preload" href="/fonts/ledger-serif.woff2" as="font" crossorigin>
<script>window.dataLayer=window.dataLayer||[];dataLayer.push({{"section":"{attr(page.section)}","pageType":"{page.kind}"}});</script>
</head>
<body>
<div class="consent-bar" id="consent"><p>We use cookies and similar technologies to improve your experience and for advertising. See our <a href="/privacy">Privacy Policy</a>.</p><button id="consent-ok">OK</button></div>
<div class="top-bar"><a href="/e-edition">Today's e-Edition</a> | <a href="/weather">Northfield 41°F</a> | <a href="/subscribe">Subscribe</a> | <a href="/login">Log in</a></div>
<header class="site-header"><a class="brand" href="/">{site}</a>
<nav class="main-nav"><ul>
{nav(sections, page.section)}
</ul></nav>
<form class="search" action="/search"><input name="q" placeholder="Search"></form></header>
<div class="ad-slot" data-ad="leaderboard"><p>ADVERTISEMENT</p></div>
<main class="container">
{main}
</main>
<aside class="sidebar"><h2>Most Read</h2><ol>
{link_list(related(page, pages, 4))}
</ol><div class="ad-slot" data-ad="rail"><p>ADVERTISEMENT</p></div></aside>
<footer class="site-footer"><nav><a href="/about">About Us</a> <a href="/contact">Contact Us</a> <a href="/careers">Careers</a> <a href="/terms">Terms of Use</a> <a href="/privacy">Privacy Policy</a> <a href="/privacy#ccpa">Do Not Sell or Share My Personal Information</a></nav>
<p>Copyright © 2026 Northfield Ledger Publishing Co. All rights reserved. 400 Commerce St., Northfield.</p></footer>
</body>
</html>
"""


def kestrel(page: Page, pages: list[Page]) -> str:
    """Kestrel News Network: a TV-news site (watch-live bar, trending rail, the seed's newsletter box)."""
    site = "Kestrel News"
    sections = [("Home", "/"), ("US", "/news/us"), ("World", "/news/world"), ("Europe", "/news/world/europe"),
                ("Business", "/news/business"), ("Science", "/news/science"), ("Health", "/news/health"),
                ("Sports", "/news/sports"), ("Entertainment", "/news/entertainment"), ("Weather", "/weather"),
                ("Video", "/video")]
    dt = page.published
    head_extra = ""
    if page.is_article:
        head_extra = meta_tags(page, site, "en_US") + ("\n" + ld_script(news_article(page, site, "https://www.kestrelnews.example/assets/kestrel-logo.png")) if page.jsonld else "")
        main = f"""<article class="post">
<header class="post-header">
<h1 class="post-title">{esc(page.title)}</h1>
<div class="post-author"><span class="author-name">{esc(", ".join(page.authors))}</span></div>
<div class="post-meta"><span class="byline">{esc(page.byline)}</span>
<span class="date">{MONTHS[dt.month - 1]} {dt.day}, {dt.year}</span><a class="category" href="/news/{slug(page.section)}">{esc(page.section)}</a></div>
<div class="share-tools"><span class="share-label">share</span><ul>
{share_links(page, ["Facebook", "Twitter", "Email"])}
</ul></div>
</header>
<h2 class="featured-title">{esc(page.title)}</h2>
{_figure(page, "featured-image")}
<div class="post-content">
{paragraphs_html(page, 5, '<div class="ad-container"><div class="ad-slot" id="ad-mid">Advertisement</div></div>')}
</div>
</article>
<div class="newsletter-box"><img class="nl-icon" src="/assets/newsletter-icon.svg" alt="kestrel newsletter icon">
<h3>Sign up for Kestrel Daily</h3><p>What you need to know, summarized in one email.</p>
<p>Stay informed with accurate news you can trust.</p>
<form action="/newsletter" method="post"><input type="email" name="email" placeholder="Email address"><button>Sign up</button></form>
<p class="terms">By registering for the newsletter, you agree to the <a href="/privacy">Privacy Policy</a>.</p></div>
<section class="comments-section" id="comments">
{comments_html(page, "Comments", "Reply", "Flag") if page.comments else '<h2 class="comments-title">Comments</h2><p class="no-comments">No comments yet.</p>'}
</section>
<section class="related-posts"><h2>Related Stories</h2><ul>
{link_list(related(page, pages))}
</ul></section>"""
        title = f"{page.title} | {site}"
    else:
        listed = [p for p in pages if p.outlet == page.outlet and p.is_article]
        main = f"""<section class="category-page"><h1 class="category-title">{esc(page.section)}</h1>
<div class="video-promo"><a href="/video">Watch: the latest {esc(page.section.lower())} reports</a></div>
<ul class="post-list">
{link_list(listed, lambda p: f' <span class="date">{MONTHS[p.published.month - 1][:3]} {p.published.day}</span>')}
</ul><a class="load-more" href="{attr(page.path)}/page/2">Load more</a></section>"""
        title = f"{page.section} | {site}"
    return f"""<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="canonical" href="{attr(page.url)}">
{head_extra}
<link rel="icon" href="/favicon.ico">
<script src="https://players.kestrelnews.example/live/player.js" defer></script>
</head>
<body class="{"single-post" if page.is_article else "archive"}">
<div class="gdpr-banner" id="gdpr"><p>This website uses cookies to ensure you get the best experience. <a href="/cookie-policy">Learn more</a></p><button>Got it!</button></div>
<div class="live-bar"><a href="/live">● WATCH LIVE</a> <span class="ticker">BREAKING: Follow the latest headlines from the Kestrel newsroom</span></div>
<header class="header"><a class="logo" href="/"><img src="/assets/kestrel-logo.svg" alt="Kestrel News Network"></a>
<nav class="menu"><ul>
{nav(sections, page.section)}
</ul></nav><a class="donate" href="/support">Support Kestrel</a></header>
<main class="main-content">
{main}
</main>
<aside class="trending"><h2>Trending Now</h2><ol>
{link_list(related(page, pages, 5))}
</ol><div class="ad-slot" id="ad-sidebar">Advertisement</div></aside>
<footer class="footer"><div class="footer-nav"><a href="/about">About Us</a> <a href="/contact">Contact Us</a> <a href="/tips">Send a News Tip</a> <a href="/careers">Careers</a> <a href="/terms">Terms of Use</a> <a href="/privacy">Privacy Policy</a></div>
<div class="social"><a href="https://www.facebook.com/kestrelnews">Facebook</a> <a href="https://x.com/kestrelnews">X</a> <a href="https://www.youtube.com/kestrelnews">YouTube</a></div>
<p>© 2026 Kestrel News Network, a Kestrel Media company. All Rights Reserved.</p></footer>
</body>
</html>
"""


def brackenfield(page: Page, pages: list[Page]) -> str:
    """Brackenfield Evening Star: a local tabloid (no <time>, inline READ MORE, "Have your say")."""
    site = "Brackenfield Evening Star"
    sections = [("News", "/news"), ("Sport", "/sport"), ("What's On", "/whats-on"), ("Business", "/business"),
                ("Property", "/property"), ("Jobs", "/jobs"), ("Announcements", "/announcements")]
    dt = page.published
    others = related(page, pages, 4)
    read_more = (f'<p class="read-more"><strong>READ MORE:</strong> <a href="{attr(others[0].path)}">'
                 f"{esc(others[0].title)}</a></p>") if others else ""
    head_extra = meta_tags(page, site) + ("\n" + ld_script(news_article(page, site, "https://www.brackenfieldstar.example/logo.png")) if page.jsonld else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(page.title)} | {site}</title>
<link rel="canonical" href="{attr(page.url)}">
{head_extra}
<link rel="stylesheet" href="/css/star.min.css">
</head>
<body>
<div class="cookie-notice"><p>We use cookies to give you the best experience on our website. If you continue we'll assume you are happy to receive all cookies.</p><a href="/cookies">Change settings</a> <button>Continue</button></div>
<div class="weather-strip">Brackenfield: 9°C, light rain · <a href="/weather">Full forecast</a></div>
<header><div class="logo"><a href="/">The Evening <b>Star</b></a></div>
<ul class="nav">
{nav(sections)}
</ul></header>
<div class="advert"><span class="advert-label">Advertisement</span></div>
<div id="main">
<div class="breadcrumb"><a href="/">Home</a> › <a href="/news">News</a> › <span>{esc(page.section)}</span></div>
<h1>{esc(page.title)}</h1>
<div class="article-info"><span class="author-byline">{esc(page.byline)}</span><br>
<span class="published">Published: {dt.day} {MONTHS[dt.month - 1]} {dt.year}</span></div>
<div class="social-share">Share: <ul>{share_links(page, ["Facebook", "X", "WhatsApp"])}</ul></div>
{_figure(page, "main-pic")}
<div class="article-text">
{paragraphs_html(page, 2, read_more) if len(page.paragraphs) > 4 else paragraphs_html(page)}
</div>
<div class="newsletter-promo"><h3>Get the Star in your inbox</h3><p>Sign up for our free daily bulletin of Brackenfield news, sport and what's on.</p><a class="button" href="/newsletters">Sign up now</a></div>
<div class="comments" id="have-your-say"><h2>Have your say</h2>
{comments_html(page, "Comments") if page.comments else "<p>Comments are closed on this article.</p>"}
</div>
<div class="more-news"><h3>More news</h3><ul>
{link_list(others[1:])}
</ul></div>
</div>
<div class="advert"><span class="advert-label">Advertisement</span></div>
<footer><p><a href="/contact">Contact us</a> | <a href="/advertise">Advertise with us</a> | <a href="/announcements">Place an announcement</a> | <a href="/privacy">Privacy</a></p>
<p>The Brackenfield Evening Star, Unit 4, Mill Road, Brackenfield. A member of IPSO. © Star Local Media 2026</p></footer>
</body>
</html>
"""


def vestnik(page: Page, pages: list[Page]) -> str:
    """Северный вестник: a Russian regional site served in windows-1251 (declared in a meta tag only)."""
    site = "Северный вестник"
    sections = [("Главная", "/"), ("Новости", "/news"), ("Политика", "/politics"), ("Экономика", "/economy"),
                ("Общество", "/society"), ("Спорт", "/sport"), ("Культура", "/culture")]
    dt = page.published
    head_extra = meta_tags(page, site, "ru_RU") + ("\n" + ld_script(news_article(page, site, "https://www.severny-vestnik.example/img/logo.png")) if page.jsonld else "")
    return f"""<!DOCTYPE html>
<html lang="ru">
<head>
<meta charset="windows-1251">
<title>{esc(page.title)} — {site}</title>
<link rel="canonical" href="{attr(page.url)}">
{head_extra}
</head>
<body>
<div class="cookies">Мы используем файлы cookie, чтобы сайт работал удобнее. <button>Понятно</button></div>
<header><a class="logo" href="/">{site}</a><span class="slogan">Новости Северогорска и области</span>
<ul class="menu">
{nav(sections, page.section)}
</ul></header>
<div class="banner">Реклама</div>
<div class="content">
<div class="news-date">{dt.day} {RU_MONTHS[dt.month - 1]} {dt.year}, {dt:%H:%M}</div>
<h1>{esc(page.title)}</h1>
<div class="author">Автор: {esc(", ".join(page.authors))}</div>
{_figure(page, "photo")}
<div class="news-text">
{paragraphs_html(page)}
</div>
<div class="share">Поделиться: <ul>{share_links(page, ["ВКонтакте", "Telegram"])}</ul></div>
<div class="subscribe"><b>Подпишитесь на наш Telegram-канал</b> — главные новости дня без лишнего шума.</div>
<div class="comments"><h3>Комментарии</h3>
{comments_html(page, "Комментарии", "Ответить", "Пожаловаться") if page.comments else "<p>Комментариев пока нет.</p>"}
</div>
</div>
<footer><p>© 2026 «Северный вестник». Свидетельство о регистрации СМИ ЭЛ № ФС 00-00000. 16+</p>
<p><a href="/about">О редакции</a> · <a href="/ads">Реклама</a> · <a href="/contacts">Контакты</a></p></footer>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Outlet:
    name: str
    render: Callable[[Page, list[Page]], str]
    guid: Callable[[Page], tuple[str, bool]]  # (guid, isPermaLink)


def _hash_guid(prefix: str) -> Callable[[Page], tuple[str, bool]]:
    return lambda page: (f"{prefix}-{hashlib.sha1(page.url.encode()).hexdigest()[:10]}", False)


OUTLETS: dict[str, Outlet] = {
    "harbourgazette": Outlet("The Harbour Gazette", harbour, lambda p: (p.url, True)),
    "northfieldledger": Outlet("Northfield Ledger", ledger, _hash_guid("ledger")),
    "kestrelnews": Outlet("Kestrel News", kestrel, lambda p: (p.url, True)),
    "brackenfieldstar": Outlet("Brackenfield Evening Star", brackenfield, _hash_guid("star")),
    "severnyvestnik": Outlet("Северный вестник", vestnik, lambda p: (p.url, True)),
}


def render(page: Page, pages: list[Page]) -> bytes:
    """The page as served: rendered by its outlet's template, encoded in its charset."""
    return OUTLETS[page.outlet].render(page, pages).encode(page.charset)


# --------------------------------------------------------------------------- feed, sitemap, manifest, WARC

def feed_xml(pages: list[Page]) -> str:
    """RSS 2.0 over the article pages, newest first (what a feed aggregator of the outlets would serve)."""
    items = []
    for page in sorted((p for p in pages if p.is_article), key=lambda p: (p.published, p.url), reverse=True):
        guid, permalink = OUTLETS[page.outlet].guid(page)
        items.append(f"""<item>
<title>{esc(page.title)}</title>
<link>{esc(page.url)}</link>
<guid isPermaLink="{str(permalink).lower()}">{esc(guid)}</guid>
<pubDate>{format_datetime(page.published)}</pubDate>
<category>{esc(page.section)}</category>
<description>{esc(page.description)}</description>
</item>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
<channel>
<title>newsflow sample: fictional outlets</title>
<link>https://www.harbourgazette.example/</link>
<description>Articles of the bundled newsflow sample corpus (fictional outlets, written for the project).</description>
<language>en</language>
<lastBuildDate>{format_datetime(CRAWL_START)}</lastBuildDate>
{chr(10).join(items)}
</channel>
</rss>
"""


def sitemap_xml(pages: list[Page]) -> str:
    """A Google News sitemap over all pages; only articles carry a <news:news> block."""
    urls = []
    for page in pages:
        news = ""
        if page.is_article:
            news = f"""
<news:news><news:publication><news:name>{esc(OUTLETS[page.outlet].name)}</news:name><news:language>{page.language}</news:language></news:publication>
<news:publication_date>{iso(page.published)}</news:publication_date><news:title>{esc(page.title)}</news:title></news:news>"""
        lastmod = page.published + timedelta(minutes=47) if page.is_article else page.published
        urls.append(f"<url><loc>{esc(page.url)}</loc><lastmod>{iso(lastmod)}</lastmod>{news}</url>")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">
{chr(10).join(urls)}
</urlset>
"""


def manifest(pages: list[Page]) -> list[dict[str, object]]:
    """What tests may expect of each page."""
    return [{
        "url": p.url, "outlet": OUTLETS[p.outlet].name, "host": p.host,
        "kind": "article" if p.is_article else "not_article", "page_type": p.kind,
        "title": p.title, "published": iso(p.published), "authors": list(p.authors),
        "section": p.section, "language": p.language, "charset": p.charset,
        "has_jsonld": p.is_article and p.jsonld, "has_meta": p.is_article and p.meta,
        "wire_story": bool(p.wire_id), "wire_id": p.wire_id or None, "wire_variant": p.wire_variant or None,
        "words": p.words, "first_paragraph": p.paragraphs[0] if p.is_article else None,
        "last_paragraph": p.paragraphs[-1] if p.is_article else None,
        "file": p.file,
    } for p in pages]


def _record_id(key: str) -> str:
    # Derived from the URL, not random, so the WARC is reproducible byte for byte.
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def _warc_date(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_warc(path: Path, pages: list[Page], bodies: dict[str, bytes]) -> None:
    """A warcinfo record, then one gzip-member response record per page, in URL order."""
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=True, warc_version="1.0")
        info = (f"software: newsflow data/sample/make_sample.py (warcio)\r\nformat: WARC File Format 1.0\r\n"
                f"description: newsflow sample corpus, {len(pages)} pages of fictional outlets\r\n"
                f"isPartOf: newsflow-sample\r\n").encode()
        writer.write_record(writer.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(info), length=len(info),
            warc_headers_dict={"WARC-Record-ID": _record_id("warcinfo:" + WARC_NAME), "WARC-Date": _warc_date(CRAWL_START),
                               "WARC-Filename": WARC_NAME, "Content-Type": "application/warc-fields"}))
        for i, page in enumerate(pages):
            body = bodies[page.url]
            fetched = CRAWL_START + timedelta(seconds=7 * (i + 1))
            # The cp1251 page is served without a charset, so only its meta tag tells the encoding.
            ctype = "text/html; charset=utf-8" if page.charset == "utf-8" else "text/html"
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                                  ("Date", format_datetime(fetched, usegmt=True))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                page.url, "response", payload=io.BytesIO(body), http_headers=headers,
                warc_headers_dict={"WARC-Record-ID": _record_id(page.url), "WARC-Date": _warc_date(fetched)}))


def build(out: Path = HERE, src: Path = SRC) -> list[Page]:
    """Write the whole corpus under `out`; returns the pages."""
    pages = load_pages(src)
    bodies = {p.url: render(p, pages) for p in pages}
    for page in pages:
        target = out / page.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bodies[page.url])
    write_warc(out / WARC_NAME, pages, bodies)
    (out / "feed.xml").write_text(feed_xml(pages), "utf-8")
    (out / "sitemap.xml").write_text(sitemap_xml(pages), "utf-8")
    text = json.dumps({"pages": manifest(pages)}, ensure_ascii=False, indent=1)
    (out / "manifest.json").write_text(text + "\n", "utf-8")
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: next to this script)")
    args = parser.parse_args()
    pages = build(args.out)
    articles = sum(p.is_article for p in pages)
    print(f"wrote {len(pages)} pages ({articles} articles, {len(pages) - articles} not articles) to {args.out}")


if __name__ == "__main__":
    main()
