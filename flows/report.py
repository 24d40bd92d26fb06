"""The run summary: logged, published as a Prefect artifact, and returned by the flow."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from tasks.load import REVISIT_OUTCOMES, STATES, revisit_changes, run_summary, silent_sources

COLUMNS = ["source", "discovered", *STATES]


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    """A markdown table: one row per source with counts per state and its top failure reasons."""
    header = "| " + " | ".join([*COLUMNS, "top reasons"]) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    rows = ["| " + " | ".join([*(_cell(str(e[c])) for c in COLUMNS), _cell("; ".join(e["top_reasons"]))]) + " |"
            for e in summary]
    return "\n".join([header, rule, *rows])


def publish_summary(db: Path, run_id: str, source_states: list[dict[str, Any]],
                    logger: logging.Logger | logging.LoggerAdapter) -> list[dict]:
    """Log the run's per-source summary and attach it to the flow run as an artifact.

    Sources that yielded no URL this run (failed, or a feed that had not changed) still get a row,
    with their status as the reason, so a broken source is never silently absent. A feed or
    sitemap that has gone silent (no new article for longer than its own rhythm allows, see
    tasks/views.py) is said so first in its row, logged as a warning and sent to Prefect as a
    `newsflow.source.silent` event."""
    summary = run_summary(db, run_id)
    listed = {entry["source"] for entry in summary}
    for state in source_states:
        if state["name"] not in listed:
            why = state.get("last_error") or state["last_status"]
            summary.append({"source": state["name"], "discovered": 0, **dict.fromkeys(STATES, 0),
                            "top_reasons": [f"source {state['last_status']}: {why}"[:300]]})
        elif state.get("last_error"):
            entry = next(e for e in summary if e["source"] == state["name"])
            entry["top_reasons"].insert(0, f"source: {state['last_error']}"[:300])
    silent = silent_sources(db)
    for entry in summary:
        counts = ", ".join(f"{s}={entry[s]}" for s in STATES if entry[s])
        logger.info("%s: discovered=%d %s", entry["source"], entry["discovered"], counts)
        if entry["source"] in silent:
            quiet, gap = silent[entry["source"]]
            said = f"silent: no new article for {_span(quiet)}; its longest gap in four weeks was {_span(gap)}"
            entry["top_reasons"].insert(0, said)
            logger.warning("%s has gone %s", entry["source"], said)
            # an event, not only a log line: what a Prefect automation can notify someone of
            emit_event("newsflow.source.silent",
                       resource={"prefect.resource.id": f"newsflow.source.{entry['source']}",
                                 "prefect.resource.name": entry["source"]},
                       payload={"quiet_for_s": quiet.total_seconds(), "longest_gap_s": gap.total_seconds()})
    create_markdown_artifact(markdown=summary_markdown(summary), key="ingest-summary",
                             description=f"newsflow run {run_id}")
    return summary


# Changed articles a revisit run's artifact lists; the rest are in `article_changes`.
ARTIFACT_CHANGES = 50


def publish_revisit_summary(db: Path, run_id: str, summary: dict[str, Any],
                            logger: logging.Logger | logging.LoggerAdapter) -> list[dict[str, Any]]:
    """Log a revisit run's outcomes and changed articles, attach them to the flow run as an
    artifact, and send each correction to Prefect as a `newsflow.article.corrected` event (an
    automation can notify a desk of it). Returns the run's changes."""
    changes = revisit_changes(db, run_id)
    counts = ", ".join(f"{o} {summary[o]}" for o in REVISIT_OUTCOMES if summary.get(o))
    logger.info("revisited %d: %s", summary["revisited"], counts or "none due")
    lines = [f"Revisited {summary['revisited']}: {counts or 'none due'}.", ""]
    if changes:
        lines += ["| url | headline before | headline after | words | correction |", "|---|---|---|---|---|"]
        lines += [f"| {c['url']} | {_cell(c['title_before'])} | {_cell(c['title_after'])} | "
                  f"{c['words_before']} -> {c['words_after']} | {_cell(c['correction'])} |"
                  for c in changes[:ARTIFACT_CHANGES]]
        if len(changes) > ARTIFACT_CHANGES:
            lines.append(f"\n{len(changes) - ARTIFACT_CHANGES} more in `article_changes`.")
    for change in changes:
        logger.info("changed: %s (%s -> %s)", change["url"], change["title_before"], change["title_after"])
        if change["correction"]:
            emit_event("newsflow.article.corrected",
                       resource={"prefect.resource.id": f"newsflow.article.{change['article_id']}",
                                 "prefect.resource.name": change["url"]},
                       payload={"title": change["title_after"], "correction": change["correction"]})
    create_markdown_artifact(markdown="\n".join(lines), key="revisit-summary", description=f"newsflow run {run_id}")
    return changes


def _cell(text: str | None) -> str:
    """Text for a markdown table cell: one line, no column breaks."""
    return " ".join((text or "").split()).replace("|", "\\|")


def _span(length: timedelta) -> str:
    """A duration as people say it: 45 min, 7.5 h, 2.0 days."""
    hours = length.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
