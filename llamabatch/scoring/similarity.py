"""The `similarity` scorer, the pure part: what a row compares, and the cosine of two vectors.

A row's output — its stored `embedding` for an embedding model's row, else its
`output_text` — is compared with its `expected` text, both embedded by the
scorer's embedding model: the score is their cosine (1 for the same direction,
0 for unrelated, down to -1). Sending the texts to the model is
`llamabatch.runs.judge`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from llamabatch.config import ScorerSpec


def compared(spec: ScorerSpec, row: Mapping[str, Any]) -> tuple[Any, str] | None:
    """(the row's vector or text, its expected text), or None when the scorer skips the row."""
    if row.get("status") != "ok" or row.get("expected") is None:
        return None
    if any(row.get(col) not in values for col, values in spec.where.items()):
        return None
    own = row.get("embedding")
    if own is None:
        own = row.get("output_text")
    if own is None or (isinstance(own, str) and not own.strip()):
        return None
    return own, str(row["expected"])


def cosine(a: Any, b: Any) -> float | None:
    """The cosine of two vectors; None when either is all zeros or their lengths differ."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if x.shape != y.shape or norm == 0.0:
        return None
    return float(np.dot(x, y) / norm)
