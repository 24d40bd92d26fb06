"""Score newsflow's extraction on an article-extraction benchmark folder, with the benchmark's metric.

    uv run python bench/extraction_quality.py [--path ../shared/bench/aeb-dev] [--compare] [--speed] [--worst N]

The folder holds `html/<id>.html.gz` and `ground-truth.json` ({id: {"articleBody", "url"}}).
Metric (scrapinghub/article-extraction-benchmark): tokens are `\\w+`; each body is a multiset
of 4-token shingles; per page tp/fp/fn are normalised to sum to 1; precision is averaged over
pages with non-empty output, recall over all pages, F1 is the harmonic mean of the two means.
Pages go through `tasks.extract.decode_html` and `extract_page`, exactly as in the pipeline.
The benchmark's files are read in place, never copied into the project.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from trafilatura import bare_extraction  # noqa: E402
from trafilatura.utils import load_html  # noqa: E402

from tasks.extract import PROFILES, SETTINGS_TAG, decode_html, extract_page  # noqa: E402

DEFAULT_PATH = ROOT.parent / "shared" / "bench" / "aeb-dev"
COMPARED = ("precision", "precision-notables", "balanced", "recall", "fast", "default")


@dataclass(frozen=True, slots=True)
class PageScore:
    page_id: str
    url: str
    precision: float | None  # None when the extractor gave nothing
    recall: float

    @property
    def f1(self) -> float:
        p = self.precision or 0.0
        return 2 * p * self.recall / (p + self.recall) if p + self.recall else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    profile: str
    precision: float
    recall: float
    f1: float
    ms_per_page: float
    pages: list[PageScore]


def shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    """The multiset of n-token shingles of `text` (tokens are `\\w+`)."""
    tokens = re.findall(r"\w+", text)
    return Counter(tuple(tokens[i:i + n]) for i in range(max(0, len(tokens) - n + 1)))


def score_page(expected: str, got: str) -> tuple[float | None, float]:
    """(precision, recall) of one page, from tp/fp/fn normalised to sum to 1 as the benchmark does."""
    truth, pred = shingles(expected), shingles(got)
    tp = sum((truth & pred).values())
    fp = sum((pred - truth).values())
    fn = sum((truth - pred).values())
    total = tp + fp + fn
    if total == 0:  # both empty: a perfect non-answer
        return 1.0, 1.0
    tp, fp, fn = tp / total, fp / total, fn / total
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall


def load_pages(path: Path) -> list[tuple[str, str, str, bytes]]:
    """(id, url, expected body, raw html bytes) for each page of the benchmark folder."""
    truth = json.loads((path / "ground-truth.json").read_text(encoding="utf-8"))
    return [(page_id, item.get("url") or "", item.get("articleBody") or "",
             gzip.decompress((path / "html" / f"{page_id}.html.gz").read_bytes()))
            for page_id, item in sorted(truth.items())]


def evaluate(path: Path, profile: str = SETTINGS_TAG) -> Report:
    """Score one trafilatura profile on every page of the benchmark at `path`."""
    pages = load_pages(path)
    scores, elapsed = [], 0.0
    for page_id, url, expected, raw in pages:
        start = time.process_time()
        extracted = extract_page(decode_html(raw, None), url, profile)
        elapsed += time.process_time() - start
        precision, recall = score_page(expected, extracted.text if extracted else "")
        scores.append(PageScore(page_id, url, precision, recall))
    answered = [s.precision for s in scores if s.precision is not None]
    precision = sum(answered) / len(answered) if answered else 0.0
    recall = sum(s.recall for s in scores) / len(scores) if scores else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Report(profile, precision, recall, f1, 1000 * elapsed / max(1, len(pages)), scores)


def plain_trafilatura(html: str, url: str, profile: str = SETTINGS_TAG) -> str:
    """The text of trafilatura alone with newsflow's settings: the speed (and quality) baseline."""
    tree = load_html(html)
    doc = bare_extraction(tree, url=url, with_metadata=True, **PROFILES[profile]) if tree is not None else None
    return doc.text or "" if doc is not None else ""


def speed(path: Path, rounds: int = 3) -> tuple[float, float]:
    """CPU ms/page of plain trafilatura and of `extract_page`, timed interleaved page by page
    (best of `rounds` per page) so that load from other processes hits both alike."""
    htmls = [(decode_html(raw, None), url) for _, url, _, raw in load_pages(path)]
    plain = ours = 0.0
    for html, url in htmls:
        plain += min(_cpu(plain_trafilatura, html, url) for _ in range(rounds))
        ours += min(_cpu(extract_page, html, url) for _ in range(rounds))
    return 1000 * plain / len(htmls), 1000 * ours / len(htmls)


def _cpu(fn: object, *args: str) -> float:
    start = time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.process_time() - start


def _print_report(report: Report, worst: int) -> None:
    print(f"{report.profile:<20} precision {report.precision:.3f}  recall {report.recall:.3f}  "
          f"F1 {report.f1:.3f}  {report.ms_per_page:.1f} CPU ms/page  ({len(report.pages)} pages)")
    if worst:
        print(f"\n{worst} worst pages:")
        for s in sorted(report.pages, key=lambda s: s.f1)[:worst]:
            p = "  -  " if s.precision is None else f"{s.precision:.3f}"
            print(f"  F1 {s.f1:.3f}  P {p}  R {s.recall:.3f}  {s.page_id[:12]}  {s.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="benchmark folder")
    parser.add_argument("--compare", action="store_true", help="also score other trafilatura settings")
    parser.add_argument("--speed", action="store_true", help="time extract_page against plain trafilatura")
    parser.add_argument("--worst", type=int, default=10, help="how many of the worst pages to list")
    args = parser.parse_args(argv)
    if not (args.path / "ground-truth.json").exists():
        print(f"no benchmark at {args.path}", file=sys.stderr)
        return 2
    _print_report(evaluate(args.path), worst=args.worst)
    if args.speed:
        plain, ours = speed(args.path)
        print(f"\nspeed: plain trafilatura {plain:.1f} CPU ms/page, newsflow {ours:.1f} "
              f"(newsflow runs at {plain / ours:.2f}x trafilatura's speed)")
    if args.compare:
        print("\nsettings compared:")
        for profile in (p for p in COMPARED if p in PROFILES):
            _print_report(evaluate(args.path, profile), worst=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
