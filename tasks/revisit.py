"""Revisits: stored articles fetched again at set ages, to catch headline changes, corrections
and edits (publishers change a story after it first appears, often within the first day).

    tasks.load.revisit_candidates   the articles due now (their age against Settings.revisit_after_hours)
    prepare_revisit                 the stored response's validators, then tasks.pipeline.prepare_batch
                                    without skipping known URLs
    tasks.load.record_revisits      compare with the stored version; keep the replaced one in
                                    `article_versions`, the new one in `articles`

A page is compared with what is stored by its headline and its story lines: the text's lines
without those its site repeats across articles (`tasks.boilerplate`, learned after each run),
so furniture learned after an article was first loaded is not taken for an edit.

A revisit is a conditional GET where the stored response gave validators (ETag, Last-Modified):
a site that answers 304 Not Modified sends no page and the revisit is "unchanged" without an
extraction (reason `not-modified`). Most revisits find the page unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.archive import WARC_ERRORS, read_raw
from tasks.boilerplate import line_key
from tasks.fetch import NOT_MODIFIED
from tasks.pipeline import prepare_batch
from tasks.records import Article
from tasks.settings import Settings
from tasks.similarity import jaccard

log = logging.getLogger(__name__)

# HTTP statuses that say the page was taken down (not a transient failure): the revisit's outcome
# is "gone" and the stored article stays as it was last seen.
GONE_STATUSES = frozenset({404, 410})

# How English-language newsrooms mark a correction or an update in the story itself (AP,
# Reuters, the Guardian and NYT style: "Correction:" or "Clarification:" or "Editor's note:"
# opening a line, "An earlier version of this article...", "This story has been updated to...").
# A line the new version adds that matches is kept as the change's `correction`. A word alone
# ("the ministry corrected its forecast") is not a notice. Other languages are not matched.
CORRECTION = re.compile(
    r"^\W*(?:correction|clarification|editor[’']?s note)\b"
    r"|\b(?:an earlier|a previous) version of this\b"
    r"|\bthis (?:article|story|report|post) (?:has been|was) (?:updated|amended|corrected|changed)\b",
    re.IGNORECASE,
)


# A page that now names another URL as its own (after a redirect, or by its rel=canonical) is a new
# version of the article only when it still tells the same story: at least this 5-word-shingle
# Jaccard similarity with the stored text. An edited story keeps most of its sentences (an added
# paragraph or correction leaves it far above this); a story taken down by redirecting to a
# section or the home page shares none (a "soft 404": the revisit says "gone").
SAME_STORY = 0.2


@dataclass(frozen=True, slots=True)
class Change:
    """How a revisited page differs from the stored version."""

    title_changed: bool
    diff: str  # the story lines removed (-) and added (+), unified diff without context; "" when only the headline changed
    correction: str | None  # an added line that marks a correction or an update, if any


def story_lines(text: str | None, boilerplate: frozenset[str]) -> list[str]:
    """The text's non-empty lines without those its site repeats (`line_key`s in `boilerplate`)."""
    return [line for line in (text or "").splitlines() if line.strip() and line_key(line) not in boilerplate]


def compare(old_title: str | None, old_text: str | None, new_title: str | None, new_text: str | None,
            boilerplate: frozenset[str] = frozenset()) -> Change | None:
    """The change from the stored headline and text to the revisited ones; None when the
    headline and the story lines are the same."""
    before, after = story_lines(old_text, boilerplate), story_lines(new_text, boilerplate)
    title_changed = (old_title or "") != (new_title or "")
    if before == after and not title_changed:
        return None
    # difflib's unified diff starts with its ---/+++ file header: not wanted for two versions of one text
    lines = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)][2:]
    added = [line[1:] for line in lines if line.startswith("+")]
    correction = next((line for line in added if CORRECTION.search(line)), None)
    return Change(title_changed, "\n".join(lines), correction)


def moved_elsewhere(old_canonical: str | None, new_canonical: str | None, old_text: str | None,
                    new_text: str | None) -> bool:
    """Whether the revisited URL now leads to another page, not to a new version of the article."""
    return old_canonical != new_canonical and jaccard(old_text or "", new_text or "") < SAME_STORY


def with_validators(records: list[Article], conditional: bool = True) -> list[Article]:
    """The candidates ready to fetch again: the stored response each was read from (`raw`, from
    `tasks.load.revisit_candidates`) dropped, its ETag and Last-Modified kept as hints for a
    conditional GET (with `conditional`). A stored response that cannot be read back (an archive
    moved or erased) gives none: the page is fetched whole."""
    ready = []
    for record in records:
        etag = last_modified = None
        if conditional and record.raw is not None:
            try:
                stored = read_raw(record.raw)
            except (OSError, *WARC_ERRORS) as exc:
                log.info("revisit %s: no validators, the stored response is unreadable (%s)", record.url, exc)
            else:
                etag, last_modified = stored.header("etag"), stored.header("last-modified")
        hints = dataclasses.replace(record.hints, etag=etag, last_modified=last_modified)
        ready.append(record.replace(raw=None, hints=hints))
    return ready


def prepare_revisit(db: Path, records: list[Article], settings: Settings) -> list[Article]:
    """Fetch, extract and normalise stored articles again (conditionally where their stored
    response allows, and not skipping known URLs, as an ingest would). Each record keeps its
    stored `article_id`, whatever URL the page now names as its own (a moved slug, a new
    rel=canonical): it is that article's new version."""
    prepared = prepare_batch(db, with_validators(records, settings.revisit_conditional), settings, skip_known=False)
    # the stages keep a batch's order and length (records.py)
    return [new.replace(article_id=old.article_id) for old, new in zip(records, prepared, strict=True)]


# --- Prefect tasks (thin wrappers) -----------------------------------------------------------------
from prefect import task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402

prepare_revisit_task = task(name="revisit-prepare", cache_policy=NONE, retries=1, retry_delay_seconds=5)(prepare_revisit)
