"""SQL of the operator's views and of the full-text search index (executed by `tasks.load`).

    source_health   per source: last success, success / empty-text / duplicate / missing-date /
                    paywalled rates, median lag between published and fetched, and for a feed
                    or sitemap the longest gap between its articles in four weeks and
                    whether it has gone silent
    daily_articles  articles per publication day (UTC; the fetch day when undated) and source

Both are views over table macros of the same name with a `since` argument, so `newsflow stats
--since DATE` and plain `SELECT * FROM source_health` run the same SQL.

Search is DuckDB's `fts` extension (BM25 over title and text). DuckDB cannot download it here
(no network at run time), so it is installed from the file that the PyPI package
`duckdb-extension-fts` ships for our pinned DuckDB (1.5.5). The index is a snapshot: DuckDB's
fts has no incremental update, so a search also scores the articles loaded since the last build
on the fly (see SEARCH), and so does it the indexed articles whose headline or text changed since
(a revisit's new version, a re-extraction: `search_stale`). `refresh_search`, at the end of a flow
run, rebuilds the index only when more than `search_unindexed_max` articles wait outside it or
stale, or when an indexed text changed some other way (`search_index_state` holds the fingerprint
of the indexed, not stale articles): a rebuild reads every article (37 s at 100,000 here), a
fingerprint only hashes them (0.3-0.7 s), so a scheduled run that adds or revises a few hundred
articles of a large archive does not pay for the whole archive each time.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

# The epoch stands for "no --since": every row.
EPOCH = "1970-01-01"

# A source gone silent: a feed or sitemap that newsflow still reads but whose newest article is
# older than its own rhythm allows. The rhythm is `longest_gap`, the longest gap between its
# articles in the RHYTHM_WINDOW before its newest one, by publication time: four weeks hold four
# weekends and as many nights, so a source that publishes only on weekdays, however many articles
# a day, has a weekend as its longest gap, and a weekend is not silence. (A percentile would not
# do: the weekend gaps are 4% of a five-a-day source's gaps but 1% of a twenty-a-day one's.) An
# outage in the window raises the bar until it leaves the window; the outage itself was flagged
# when it happened. Fewer than RHYTHM_MIN_GAPS gaps is no rhythm. It is silent when, at its last
# check (not now: a newsflow that stopped running does not make every source silent), the newest
# article is older than SILENT_GAPS times that gap, and never before SILENT_FLOOR (an hourly
# source's night is not silence). Publication times matter, not fetch times: a scheduled run
# fetches a source's articles in bursts, one per run.
RHYTHM_WINDOW = "28 days"
RHYTHM_MIN_GAPS = 10
SILENT_GAPS = 1.5
SILENT_FLOOR = "12 hours"

# Rates are shares of the URLs a source produced (fetches rows). "Success" is every URL that did
# not end failed or blocked; "empty text" is a page fetched fine with no article text on it.
VIEWS = f"""
CREATE OR REPLACE MACRO source_health(since) AS TABLE
WITH f AS (
    SELECT source,
           count(*) AS urls,
           count(*) FILTER (WHERE state = 'loaded') AS loaded,
           max(recorded_at) FILTER (WHERE state IN ('loaded', 'duplicate', 'not_article')) AS last_success,
           count(*) FILTER (WHERE state NOT IN ('failed', 'blocked')) / count(*) AS success_rate,
           count(*) FILTER (WHERE state = 'not_article') / count(*) AS empty_text_rate,
           count(*) FILTER (WHERE state = 'duplicate') / count(*) AS duplicate_rate,
           count(*) FILTER (WHERE state IN ('failed', 'blocked')) AS failed
    FROM fetches WHERE recorded_at >= CAST(since AS TIMESTAMPTZ) GROUP BY source
), a AS (
    SELECT source,
           count(*) FILTER (WHERE published_at IS NULL) / count(*) AS missing_date_rate,
           count(*) FILTER (WHERE NOT free_access) / count(*) AS paywalled_rate,
           count(*) FILTER (WHERE tdm_reserved) / count(*) AS tdm_reserved_rate,
           -- over seconds: DuckDB's median of INTERVALs is the lower middle value, not the mean of two
           to_seconds(CAST(median(epoch(fetched_at) - epoch(published_at))
                           FILTER (WHERE published_at <= fetched_at) AS BIGINT)) AS median_lag
    FROM articles a
    WHERE EXISTS (SELECT 1 FROM fetches x WHERE x.article_id = a.article_id
                  AND x.recorded_at >= CAST(since AS TIMESTAMPTZ))
    GROUP BY source
), recent AS (
    -- each source's articles of the RHYTHM_WINDOW before its newest, by publication time (the
    -- fetch time when undated or dated after it was fetched), with the gap to the one before
    SELECT source, t, epoch(t) - epoch(lag(t) OVER (PARTITION BY source ORDER BY t)) AS gap
    FROM (SELECT source, least(published_at, fetched_at) AS t,
                 max(least(published_at, fetched_at)) OVER (PARTITION BY source) AS newest
          FROM articles)
    WHERE t >= newest - INTERVAL '{RHYTHM_WINDOW}'
), rhythm AS (
    SELECT r.source, max(r.t) AS newest,
           CASE WHEN count(r.gap) >= {RHYTHM_MIN_GAPS}
                THEN to_seconds(CAST(max(r.gap) AS BIGINT)) END AS longest_gap
    FROM recent r GROUP BY r.source
), names AS (
    SELECT name AS source FROM sources UNION SELECT source FROM f
)
SELECT n.source, coalesce(f.urls, 0) AS urls, coalesce(f.loaded, 0) AS loaded,
       coalesce(f.failed, 0) AS failed, f.last_success,
       round(f.success_rate, 3) AS success_rate, round(f.empty_text_rate, 3) AS empty_text_rate,
       round(f.duplicate_rate, 3) AS duplicate_rate, round(a.missing_date_rate, 3) AS missing_date_rate,
       round(a.paywalled_rate, 3) AS paywalled_rate, round(a.tdm_reserved_rate, 3) AS tdm_reserved_rate,
       a.median_lag, r.longest_gap,
       CASE WHEN s.kind IN ('feed', 'sitemap') AND s.last_checked_at > r.newest
            THEN s.last_checked_at - r.newest END AS quiet_for,
       -- quiet_for: the column just above (DuckDB reads a select list's earlier aliases)
       CASE WHEN r.longest_gap IS NOT NULL
            THEN quiet_for > greatest({SILENT_GAPS} * r.longest_gap, INTERVAL '{SILENT_FLOOR}') END AS silent,
       s.last_status, s.last_error
FROM names n LEFT JOIN f USING (source) LEFT JOIN a USING (source) LEFT JOIN rhythm r USING (source)
LEFT JOIN sources s ON s.name = n.source
WHERE n.source IS NOT NULL
ORDER BY n.source;

CREATE OR REPLACE VIEW source_health AS SELECT * FROM source_health('{EPOCH}');

CREATE OR REPLACE MACRO daily_articles(since) AS TABLE
SELECT CAST(timezone('UTC', coalesce(published_at, fetched_at)) AS DATE) AS day, source,
       count(*) AS articles, count(*) FILTER (WHERE published_at IS NULL) AS undated,
       CAST(round(avg(word_count)) AS INTEGER) AS avg_words
FROM articles
WHERE CAST(timezone('UTC', coalesce(published_at, fetched_at)) AS DATE) >= CAST(since AS DATE)
GROUP BY ALL ORDER BY day DESC, source;

CREATE OR REPLACE VIEW daily_articles AS SELECT * FROM daily_articles('{EPOCH}');

-- Revisits (tasks/revisit.py): per source, the articles revisited since `since`, and how many of
-- them changed, changed their headline, added a correction or were taken down.
CREATE OR REPLACE MACRO source_revisions(since) AS TABLE
WITH r AS (
    SELECT article_id, bool_or(outcome = 'changed') AS changed, bool_or(outcome = 'gone') AS gone
    FROM revisits WHERE revisited_at >= CAST(since AS TIMESTAMPTZ) GROUP BY article_id
), v AS (
    SELECT article_id, bool_or(title_changed) AS headline, bool_or(correction IS NOT NULL) AS corrected
    FROM article_versions WHERE replaced_at >= CAST(since AS TIMESTAMPTZ) GROUP BY article_id
)
SELECT a.source, count(*) AS revisited, count(*) FILTER (WHERE r.changed) AS changed,
       count(*) FILTER (WHERE r.changed) / count(*) AS changed_rate,
       count(*) FILTER (WHERE v.headline) AS headline_changed,
       count(*) FILTER (WHERE v.corrected) AS corrected,
       count(*) FILTER (WHERE r.gone) AS gone
FROM r JOIN articles a USING (article_id) LEFT JOIN v USING (article_id)
GROUP BY a.source ORDER BY a.source;

CREATE OR REPLACE VIEW source_revisions AS SELECT * FROM source_revisions('{EPOCH}');
"""

# Porter stemming and English stop words are fts's defaults; accents and case are folded.
CREATE_INDEX = "PRAGMA create_fts_index('articles', 'article_id', 'title', 'text', overwrite = 1)"

# Articles loaded since the index was built are not in it, and those revised since are stale in it:
# a search scores them on the fly with the index's own tokenizer, stop words, stemmer and statistics
# (the BM25 of fts's match_bm25, k = 1.2, b = 0.75), so each run need not rebuild the index over the
# whole archive (37 s at 100,000 articles here). `refresh_search` rebuilds it once more than
# `search_unindexed_max` of them wait (or an indexed text changed outside newsflow's writes);
# tests/test_views.py checks these scores against an index built over the same articles.
# The articles a search scores itself: those the index lacks (fts's `docs` table names each indexed
# article by its id) and those that changed since it was built (`search_stale`).
_STALE = "a.article_id IN (SELECT article_id FROM search_stale)"
_UNINDEXED = f"articles a WHERE (a.article_id NOT IN (SELECT name FROM fts_main_articles.docs) OR {_STALE})"
_SEARCH_FILTERS = r"""
    ($since IS NULL OR coalesce(published_at, fetched_at) >= CAST($since AS TIMESTAMPTZ))
    AND ($source IS NULL OR source = $source OR domain = regexp_replace(lower($source), '^www\.', ''))
"""
# The articles a search must score itself are the newest, so at the end of the table: the range
# of their rowids, looked up first and passed as constants, lets DuckDB read the texts of that
# range only (a filter on rowid skips the rest of the table), where a join alone read the whole
# text column (a search at 100,000 articles went from 0.2 s and 300 MB to 0.5 s and 670 MB).
# Were they spread through the table, the range would cover it and the search stay right, only
# slower. (Joining on rowid instead, with the rowids as a table, crashed DuckDB 1.5.5.)
UNINDEXED_SPAN = f"""
SELECT min(a.rowid), max(a.rowid) FROM {_UNINDEXED}
AND {_SEARCH_FILTERS}
"""
SEARCH = rf"""
WITH indexed AS (
    SELECT article_id, fts_main_articles.match_bm25(article_id, $query) AS score FROM articles a
    WHERE NOT {_STALE} AND {_SEARCH_FILTERS}
),
unindexed AS (
    SELECT a.article_id, a.title, a.text FROM {_UNINDEXED}
    AND a.rowid BETWEEN $first AND $last AND {_SEARCH_FILTERS}
),
query_terms AS (SELECT DISTINCT stem(unnest(fts_main_articles.tokenize($query)), 'porter') AS term),
words AS (
    SELECT article_id, unnest(fts_main_articles.tokenize(title)) AS word FROM unindexed
    UNION ALL
    SELECT article_id, unnest(fts_main_articles.tokenize(text)) AS word FROM unindexed
),
terms AS (
    SELECT article_id, stem(word, 'porter') AS term FROM words
    WHERE word <> '' AND word NOT IN (SELECT sw FROM fts_main_articles.stopwords)
),
lengths AS (SELECT article_id, count(*) AS len FROM terms GROUP BY article_id),
frequencies AS (SELECT article_id, term, count(*) AS tf FROM terms SEMI JOIN query_terms USING (term) GROUP BY ALL),
stats AS (SELECT num_docs, avgdl FROM fts_main_articles.stats),
unindexed_scores AS (
    SELECT f.article_id,
           sum(log((s.num_docs - coalesce(d.df, 0) + 0.5) / (coalesce(d.df, 0) + 0.5) + 1)
               * (f.tf * (1.2 + 1)) / (f.tf + 1.2 * (1 - 0.75 + 0.75 * (l.len / s.avgdl)))) AS score
    FROM frequencies f JOIN lengths l USING (article_id) CROSS JOIN stats s
    LEFT JOIN fts_main_articles.dict d ON d.term = f.term
    GROUP BY f.article_id
),
scores AS (
    SELECT article_id, score FROM indexed WHERE score IS NOT NULL
    UNION ALL
    SELECT article_id, score FROM unindexed_scores
)
SELECT round(s.score, 3) AS score, CAST(timezone('UTC', a.published_at) AS DATE) AS published,
       a.source, a.title, a.url
FROM scores s JOIN articles a USING (article_id)
ORDER BY s.score DESC, published DESC NULLS LAST, a.url
LIMIT $limit
"""

# What the index covers, and what it does not yet: the indexed, not stale articles' columns as a
# fingerprint (a changed or removed row changes it: xor of row hashes), and the count of articles
# a search scores itself.
ROW_HASH = "hash(a.article_id, a.title, a.text)"
INDEXED_FINGERPRINT = f"""
SELECT count(*), coalesce(bit_xor({ROW_HASH}), 0)
FROM articles a SEMI JOIN fts_main_articles.docs d ON d.name = a.article_id
WHERE NOT {_STALE}
"""
UNINDEXED_COUNT = f"SELECT count(*) FROM {_UNINDEXED}"
SEARCH_STATE = """
CREATE TABLE IF NOT EXISTS search_index_state (  -- what the fts index was built over (tasks/views.py)
    articles    BIGINT,
    fingerprint UBIGINT,
    built_at    TIMESTAMPTZ
);
-- indexed articles whose headline or text changed since the index was built: searches score them on
-- the fly until the next rebuild empties this table (tasks/load.py `_leave_search_index`)
CREATE TABLE IF NOT EXISTS search_stale (article_id VARCHAR NOT NULL);
"""
STALE_EXISTS = "SELECT count(*) > 0 FROM duckdb_tables() WHERE table_name = 'search_stale' AND database_name = current_database()"

INDEX_EXISTS = ("SELECT count(*) > 0 FROM duckdb_schemas() "
                "WHERE schema_name = 'fts_main_articles' AND database_name = current_database()")

EXPORT = """
COPY (
    SELECT *, CAST(timezone('UTC', coalesce(published_at, fetched_at)) AS DATE) AS date
    FROM articles
    WHERE CAST(timezone('UTC', coalesce(published_at, fetched_at)) AS DATE) >= CAST($since AS DATE)
) TO '{out}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE, FILENAME_PATTERN 'articles_{{uuid}}')
"""


class SearchUnavailableError(RuntimeError):
    """DuckDB's fts extension is not installed for this platform or DuckDB version."""


def fts_extension_file() -> Path | None:
    """The fts extension file shipped by `duckdb-extension-fts` for the running DuckDB, if any."""
    try:
        import duckdb_extension_fts
    except ImportError:
        return None
    root = Path(duckdb_extension_fts.__file__).parent / "extensions" / duckdb.__version__
    if not root.is_dir():
        root = root.parent / f"v{duckdb.__version__}"
    found = sorted(root.glob("fts.duckdb_extension*")) if root.is_dir() else []
    return found[0] if found else None


def load_fts(con: duckdb.DuckDBPyConnection) -> None:
    """Install fts from the PyPI package's file (never from the network) and load it."""
    path = fts_extension_file()
    if path is None:
        raise SearchUnavailableError(
            f"full-text search needs DuckDB's fts extension for DuckDB {duckdb.__version__}: "
            "install the `duckdb-extension-fts` package of the same version "
            "(it has wheels for Linux x86_64/aarch64, macOS and Windows x86_64)")
    try:
        con.execute(f"INSTALL '{path.as_posix()}'")
        con.execute("LOAD fts")
    except duckdb.Error as exc:
        raise SearchUnavailableError(f"cannot load DuckDB's fts extension from {path}: {exc}") from exc


def export_sql(out_dir: Path) -> str:
    """The COPY statement writing Parquet files partitioned by day into `out_dir`."""
    return EXPORT.format(out=str(out_dir).replace("'", "''"))
