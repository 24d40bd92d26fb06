"""URL and content identity over a batch and what the database knows."""

from __future__ import annotations

from tasks.dedupe import KnownKeys, mark_duplicates, skip_known_urls, unique_candidates
from tasks.normalise import canonical_url
from tasks.records import Article, Extracted, SourceKind, State


def candidate(url: str) -> Article:
    return Article(url=url, source="feed", source_kind=SourceKind.FEED)


def normalised(url: str, text_hash: str, article_id: str, domain: str = "news.example") -> Article:
    return candidate(url).replace(final_url=url, canonical_url=canonical_url(url), article_id=article_id,
                                  domain=domain, content_hash=text_hash, extracted=Extracted(text="x"))


def test_unique_candidates_drops_exact_repeats_and_marks_tracking_variants():
    records = list(unique_candidates([
        candidate("https://news.example/a"),
        candidate("https://news.example/a"),
        candidate("https://news.example/a?utm_source=rss&utm_medium=feed"),
        candidate("https://news.example/b"),
    ]))
    assert [r.url for r in records] == [
        "https://news.example/a", "https://news.example/a?utm_source=rss&utm_medium=feed",
        "https://news.example/b"]
    assert [r.state for r in records] == [None, State.DUPLICATE, None]
    assert records[1].reason == "in-run"


def test_unique_candidates_marks_the_canonical_form_after_its_variant_and_takes_any_string():
    records = list(unique_candidates([
        candidate("https://news.example/a?utm_source=rss"),
        candidate("https://news.example/a"),  # not an exact repeat: a recorded duplicate, not dropped
        candidate("https://news.example/a"),  # an exact repeat: dropped
        candidate("https://news.example/\udcff"),  # a lone surrogate: any str is still a key
    ]))
    assert [(r.url, r.state) for r in records] == [
        ("https://news.example/a?utm_source=rss", None), ("https://news.example/a", State.DUPLICATE),
        ("https://news.example/\udcff", None)]


def test_a_normalised_record_is_known_by_the_url_keys_normalise_found():
    # normalise found these keys once (Article.url_keys); dedupe and the load take them as they are
    record = normalised("https://news.example/a", "h", "id-a").replace(url_keys=("https://news.example/moved",))
    [out] = mark_duplicates([record], KnownKeys(urls={"https://news.example/moved": "OLD"}))
    assert (out.state, out.reason, out.article_id) == (State.DUPLICATE, "url-seen", "OLD")
    [unkeyed] = mark_duplicates([record.replace(url_keys=())], KnownKeys(urls={"https://news.example/moved": "OLD"}))
    assert unkeyed.state is None  # without them, the keys are the record's own URLs


def test_skip_known_urls_uses_canonical_forms():
    known = {canonical_url("https://news.example/a"): "id-a"}
    records = skip_known_urls([candidate("https://NEWS.example/a#comments"), candidate("https://news.example/c")],
                              known)
    assert records[0].state is State.DUPLICATE and records[0].reason == "url-seen"
    assert records[0].article_id == "id-a"
    assert records[1].state is None


def test_mark_duplicates_by_url_content_and_within_batch():
    known = KnownKeys(urls={canonical_url("https://a.example/1"): "A1"}, content={("h-old", "news.example"): "OLD"})
    records = mark_duplicates([
        normalised("https://a.example/1", "h1", "A1"),      # URL known
        normalised("https://b.example/2", "h-old", "B2"),   # same text as a loaded article of the same site
        normalised("https://c.example/3", "h3", "C3"),      # new
        normalised("https://d.example/4", "h3", "D4"),      # same text as C3, earlier in this batch
    ], known)
    assert [(r.state, r.reason, r.article_id) for r in records] == [
        (State.DUPLICATE, "url-seen", "A1"),
        (State.DUPLICATE, "same-content", "OLD"),
        (None, None, "C3"),
        (State.DUPLICATE, "in-run", "C3"),
    ]


def test_same_text_on_another_site_is_a_syndicated_copy_not_a_duplicate():
    known = KnownKeys(content={("wire", "first.example"): "FIRST"})
    records = mark_duplicates([
        normalised("https://second.example/s", "wire", "S2", domain="second.example"),
        normalised("https://third.example/s", "wire", "S3", domain="third.example"),
    ], known)
    assert [r.state for r in records] == [None, None]


def test_done_records_pass_through_untouched():
    failed = candidate("https://a.example/1").finish(State.FAILED, "timeout")
    assert mark_duplicates([failed], KnownKeys(urls={canonical_url(failed.url): "X"})) == [failed]
    assert skip_known_urls([failed], {canonical_url(failed.url): "X"}) == [failed]
