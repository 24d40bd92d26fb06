"""The run summary: logged, published as a Prefect artifact, and returned by the flow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact

from tasks.load import STATES, run_summary

COLUMNS = ["source", "discovered", *STATES]


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    """A markdown table: one row per source with counts per state and its top failure reasons."""
    header = "| " + " | ".join([*COLUMNS, "top reasons"]) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    rows = ["| " + " | ".join([*(str(e[c]) for c in COLUMNS), "; ".join(e["top_reasons"])]) + " |"
            for e in summary]
    return "\n".join([header, rule, *rows])


def publish_summary(db: Path, run_id: str, source_states: list[dict[str, Any]],
                    logger: logging.Logger | logging.LoggerAdapter) -> list[dict]:
    """Log the run's per-source summary and attach it to the flow run as an artifact.

    Sources that yielded no URL this run (failed, or a feed that had not changed) still get a row,
    with their status as the reason, so a broken source is never silently absent."""
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
    for entry in summary:
        counts = ", ".join(f"{s}={entry[s]}" for s in STATES if entry[s])
        logger.info("%s: discovered=%d %s", entry["source"], entry["discovered"], counts)
    create_markdown_artifact(markdown=summary_markdown(summary), key="ingest-summary",
                             description=f"newsflow run {run_id}")
    return summary
