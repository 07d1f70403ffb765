"""The desk's CSV export: each learner's best score at a task, one row a student, with every
cell a spreadsheet would read as a formula made text."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula
HEADER = ("student_id", "best_score", "max_score", "attempts", "last_submitted_at")


def cell(value: Any) -> str:
    """A value as a CSV cell: a number as written (`g`), nothing for None, and text that
    starts like a formula quoted with a leading apostrophe, which spreadsheets show as text."""
    if value is None:
        return ""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def best_scores_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(
            [cell(row[name]) for name in ("student_id", "best_score", "max_score", "attempts")]
            + [cell(row["last_at"])]
        )
    return out.getvalue()
