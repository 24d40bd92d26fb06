"""Text-level evidence for the article body: shingle support, edge trimming, per-site boilerplate.

Pure functions over the blocks (paragraphs, headings, quotes, list items) of an extracted body.
`tasks/extract.py` gathers the evidence (a second extractor, JSON-LD `articleBody`, the lines a
site repeats across its archive) and calls these to decide which blocks to keep.

Written by hand: no library votes between extractor outputs or learns per-site boilerplate from
a stored archive (trafilatura's own `deduplication.py` keeps an in-process LRU of segments,
which forgets on every process start and would remove a line the first time it repeats).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+")
# 4-token shingles: the unit the article-extraction benchmark scores with, long enough that a
# shared shingle means shared text rather than shared words.
SHINGLE = 4
# A block counts as supported by the evidence when this share of its shingles is found there.
SUPPORTED = 0.5
# Edge trimming never removes more than this share of the body: beyond it the evidence is more
# likely wrong (another block of the page) than the body padded.
MAX_TRIM = 0.35


@dataclass(frozen=True, slots=True)
class Block:
    """One paragraph-level piece of an extracted body; `kind` is trafilatura's tag (p, head, quote, list...)."""

    kind: str
    text: str


def tokens(text: str) -> list[str]:
    """Lowercased `\\w+` tokens."""
    return _TOKEN.findall(text.lower())


def shingles(text: str) -> set[tuple[str, ...]]:
    """The set of 4-token shingles of `text` (a shorter text is its own single shingle)."""
    toks = tokens(text)
    if len(toks) < SHINGLE:
        return {tuple(toks)} if toks else set()
    return set(zip(*(toks[i:] for i in range(SHINGLE))))  # the runs toks[i:i+SHINGLE]; ~3x faster than slicing


def coverage(text: str, evidence: set[tuple[str, ...]]) -> float:
    """Share of `text`'s shingles found in `evidence` (1.0 for a text without tokens)."""
    own = shingles(text)
    return sum(s in evidence for s in own) / len(own) if own else 1.0


def n_words(blocks: Iterable[Block]) -> int:
    return sum(len(tokens(b.text)) for b in blocks)


def trim_edges(blocks: Sequence[Block], evidence: set[tuple[str, ...]]) -> list[Block]:
    """`blocks` without the unsupported runs at their start and end (titles, teasers, pitches).

    Padding sits at the edges of an extracted body: a repeated headline or standfirst above it,
    "about the company", newsletter and related-story blocks below. Interior blocks are never
    touched, nor quotes anywhere (embedded posts and blockquotes are body text that readability
    style extractors drop, so their silence is no evidence). A run that would remove more than
    MAX_TRIM of the words is left alone.
    """
    def supported(block: Block) -> bool:
        return block.kind == "quote" or coverage(block.text, evidence) >= SUPPORTED

    # Only the edges are judged: the first and last supported blocks bound what is kept, so the
    # blocks between them are never scored (most bodies start and end with one).
    first = next((i for i, b in enumerate(blocks) if supported(b)), None)
    if first is None:
        return list(blocks)
    last = next(i for i in range(len(blocks) - 1, first - 1, -1) if i == first or supported(blocks[i]))
    kept = list(blocks[first:last + 1])
    total = n_words(blocks)
    if total - n_words(kept) > MAX_TRIM * total:
        return list(blocks)
    return kept


# --- per-site boilerplate ------------------------------------------------------------------

# A line must repeat in this many articles of one site before it counts as the site's furniture.
MIN_ARTICLES = 3
# ... and in this share of the site's sampled articles: a wire credit on one story in fifty is text.
MIN_SHARE = 0.2
# Lines longer than this are paragraphs, not furniture, even when a site repeats them.
MAX_WORDS = 40


# The counting itself is set-based SQL over the stored texts: tasks/load.py `site_boilerplate`.


def line_key(line: str) -> str:
    """The stable key of a line: 16 hex chars of a hash of its casefolded, space-collapsed text."""
    return hashlib.blake2b(" ".join(line.casefold().split()).encode("utf-8"), digest_size=8).hexdigest()


def drop_known(blocks: Sequence[Block], keys: frozenset[str]) -> list[Block]:
    """`blocks` without the lines whose key is in `keys`; blocks left empty disappear."""
    if not keys:
        return list(blocks)
    result = []
    for block in blocks:
        lines = [line for line in block.text.splitlines() if line_key(line) not in keys]
        if any(line.strip() for line in lines):
            result.append(Block(block.kind, "\n".join(lines)))
    return result
