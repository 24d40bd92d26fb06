"""Near-duplicate evidence for syndication clustering: shingles, MinHash signatures, LSH band keys.

Pure functions over batches, no database and no Prefect (`tasks/cluster_store.py` stores and
joins what this module computes). A text becomes:

    words      `\\w+`, casefolded                            tokens()
    shingles   every run of SHINGLE_WORDS consecutive words  shingle_hashes() (uint32 each)
    signature  NUM_PERM MinHash values (uint32)              signatures()
    band keys  BANDS uint64 keys, band index in the top byte band_keys()

Two texts are candidates when at least MIN_SHARED_BANDS of their band keys are equal (one
equality join and a count in SQL) and a match when their estimated Jaccard (the share of equal
signature values) is >= MATCH_THRESHOLD.

The constants were chosen by measurement (`bench/cluster_quality.py`, numbers in its output):
with 128 permutations, 42 bands of 3 rows, two shared bands and a 0.4 threshold, a pair of true
5-shingle Jaccard 0.6 is missed with probability ~4e-4 (fewer than two of 42 bands shared, each
with probability 0.6^3: 4.4e-4; estimate under 0.4: binomial tail ~1e-6), one at 0.5 with ~0.04
(mostly its estimate falling under 0.4), and a pair at 0.2 matches with probability ~3e-9.

Why two bands and not one: a sentence many articles carry (an agency credit, a subscription
line) can hold the smallest hash of three permutations in all of them, so one band's key is
shared by every article with that sentence, and its bucket grows with the archive. With "any
band", each new article was a candidate of all of them (77 pairs an article at 30,000 articles of
bench/corpus.py, growing with the archive, nearly none a match); two shared bands rarely happen by
such chance (1.7 pairs an article), while a real copy shares ~9 of 42 bands at 0.6 and ~22 at 0.8.
The rule costs recall only near the threshold: a pair at 0.4 is a candidate 77% of the time
against 94% with one band, at 0.5 97% against 99.6% (bench/cluster_quality.py's sweep), and the
labelled evaluation set still clusters every copy (lowest Jaccard 0.41) and nothing else.

Independent reports of one event (same names, places and numbers in their own words) share only
a few 5-word runs, Jaccard < 0.05 on the evaluation set, far below the threshold.

Texts of fewer than MIN_WORDS words get no signature (None): a 20-word brief has ~16
shingles, too few for a Jaccard estimate to mean anything, and such briefs ("Police are
appealing for witnesses ...") are exactly where unrelated stories look alike.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
from datasketch import MinHash
from numpy.lib.stride_tricks import sliding_window_view

SHINGLE_WORDS = 5
NUM_PERM = 128
BANDS = 42
ROWS = 3  # BANDS * ROWS = 126 <= NUM_PERM: the last 2 values only sharpen the estimate
MATCH_THRESHOLD = 0.4
MIN_SHARED_BANDS = 2  # a candidate pair shares at least this many band keys (see above)
MIN_WORDS = 30
SEED = 1  # fixed forever: signatures are stored and compared across runs

_WORD = re.compile(r"\w+")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BAND_SHIFT = np.uint64(56)
_LOW56 = np.uint64((1 << 56) - 1)


def tokens(text: str) -> list[str]:
    """The words of a text, casefolded."""
    return _WORD.findall(text.casefold())


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: an avalanching bijection on uint64 (wraps on purpose)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def shingle_hashes(words: Sequence[str]) -> np.ndarray:
    """The distinct 32-bit hashes of every SHINGLE_WORDS-word run (empty if too few words).

    Words are hashed once each (crc32: stable across processes, unlike `hash()`) and the
    runs are combined in numpy: ~2x faster than hashing each joined shingle string.
    """
    if len(words) < SHINGLE_WORDS:
        return np.empty(0, np.uint32)
    ids = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
    windows = sliding_window_view(ids, SHINGLE_WORDS)
    h = np.zeros(len(windows), np.uint64)
    for j in range(SHINGLE_WORDS):
        h = _mix64((h ^ windows[:, j]) * _GOLDEN)
    return np.unique((h >> np.uint64(32)).astype(np.uint32))


def shingles(text: str) -> set[tuple[str, ...]]:
    """The exact set of 5-word runs of a text: ground truth for benches and tests."""
    words = tokens(text)
    return {tuple(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def jaccard(a: str, b: str) -> float:
    """The true 5-shingle Jaccard similarity of two texts (0.0 if either has no shingle)."""
    sa, sb = shingles(a), shingles(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


_TEMPLATE = MinHash(num_perm=NUM_PERM, seed=SEED)


def signature_of_hashes(hashes: np.ndarray) -> np.ndarray:
    """The MinHash signature (uint32[NUM_PERM]) of one set of 32-bit shingle hashes.

    datasketch's affine32 MinHash with its permutations built once; the per-text
    `update_batch` measured 0.3 ms for 450 shingles, faster than our own numpy version
    that vectorised across texts (1 ms per text: the (shingles x 128) block leaves cache).
    """
    m = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int,
                permutations=_TEMPLATE.permutations, scheme="affine32")
    m.update_batch(hashes)
    return m.hashvalues.astype(np.uint32, copy=False)


def signatures(texts: Iterable[str]) -> list[np.ndarray | None]:
    """A signature per text, or None for texts under MIN_WORDS words (too little evidence)."""
    out: list[np.ndarray | None] = []
    for text in texts:
        words = tokens(text)
        out.append(signature_of_hashes(shingle_hashes(words)) if len(words) >= MIN_WORDS else None)
    return out


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """(n, BANDS) uint64 keys: band index in the top 8 bits, a 56-bit hash of its ROWS values.

    Encoding the band index in the key makes "shares any band" one equality join on one
    column. 56 bits: a chance collision between 1M texts is ~1e-5 per band, and verification
    drops it anyway.
    """
    sigs = np.atleast_2d(np.asarray(sigs, np.uint32))
    rows = sigs[:, :BANDS * ROWS].reshape(len(sigs), BANDS, ROWS).astype(np.uint64)
    h = np.zeros(rows.shape[:2], np.uint64)
    for j in range(ROWS):
        h = _mix64((h ^ rows[:, :, j]) * _GOLDEN)
    band = np.arange(BANDS, dtype=np.uint64) << _BAND_SHIFT
    return band | (h & _LOW56)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal MinHash values: the Jaccard estimate (a float per row)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a == b).mean(axis=1)


def is_match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: do these signature pairs verify as near-duplicates?"""
    return estimated_jaccard(a, b) >= MATCH_THRESHOLD


def shares_bands(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: would these signature pairs be LSH candidates (MIN_SHARED_BANDS keys equal)?"""
    return (band_keys(a) == band_keys(b)).sum(axis=1) >= MIN_SHARED_BANDS
