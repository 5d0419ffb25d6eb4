"""Loading labelled intent data from CSV files."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

TEXT_COLUMN = "text"
LABEL_COLUMN = "category"


def load_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a text,category CSV; raise ValueError with a clear message on missing columns or empty file."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise ValueError(f"{path}: empty file (no header row)")
        missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in columns]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns)}; "
                f"expected a header with '{TEXT_COLUMN}' and '{LABEL_COLUMN}'"
            )
        reader.fieldnames = columns
        texts: list[str] = []
        labels: list[str] = []
        for line_no, row in enumerate(reader, start=2):
            text = (row.get(TEXT_COLUMN) or "").strip()
            label = (row.get(LABEL_COLUMN) or "").strip()
            if not text and not label:
                continue
            if not text or not label:
                raise ValueError(f"{path}:{line_no}: row has an empty '{TEXT_COLUMN}' or '{LABEL_COLUMN}'")
            texts.append(text)
            labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no data rows")
    return texts, labels


def in_holdout(text: str, percent: int) -> bool:
    """A stable slice: the same text is always in or out, whichever run asks (sha-256 of the text)."""
    return int(hashlib.sha256(text.strip().lower().encode()).hexdigest()[:8], 16) % 100 < percent
