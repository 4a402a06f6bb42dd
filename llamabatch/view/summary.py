"""One line per run for the runs page, from the manifest and three columns of the rows."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import pyarrow.compute as pc

from llamabatch.results.manifest import client_warning
from llamabatch.results.schema import COST_COLUMN, SCORE_PREFIX
from llamabatch.view.catalog import Run


@dataclass(frozen=True)
class RunSummary:
    key: str
    name: str
    started_at: str
    status: str
    live: bool
    models: list[str]
    rows: int = 0
    ok: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    cost_usd: float = math.nan
    cost_missing_rows: int = 0  # ok rows without a cost: `cost_usd` is then a lower bound
    scores: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.rows - self.ok


def summarize_run(run: Run) -> RunSummary:
    manifest = run.manifest
    snapshot = manifest.get("config") or {}
    configured = [str(m.get("name")) for m in snapshot.get("models") or []]
    warning = client_warning(manifest.get("client"))
    base = RunSummary(
        key=run.key,
        name=str(manifest.get("name") or ""),
        started_at=str(manifest.get("started_at") or ""),
        status=str(manifest.get("status") or "unknown"),
        live=run.live,
        models=configured,
        warnings=[warning] if warning else [],
    )
    try:
        dataset = run.dataset()
    except LookupError:
        return base
    names = dataset.schema.names
    columns = ["model", "status", "error_type"] + ([COST_COLUMN] if COST_COLUMN in names else [])
    table = dataset.to_table(columns=columns)
    present = set(pc.unique(table["model"]).to_pylist())
    models = [m for m in configured if m in present] + sorted(present - set(configured))
    kinds = table.filter(pc.is_valid(table["error_type"])).group_by("error_type")
    counts = kinds.aggregate([("error_type", "count")]).to_pylist()
    ok = pc.equal(table["status"], "ok")
    cost, missing = math.nan, 0
    if COST_COLUMN in names and table[COST_COLUMN].null_count < len(table):
        cost = float(pc.sum(table[COST_COLUMN]).as_py() or 0.0)
        missing = int(pc.sum(pc.and_(ok, pc.is_null(table[COST_COLUMN]))).as_py() or 0)
    return dataclasses.replace(
        base,
        models=models,
        rows=len(table),
        ok=int(pc.sum(ok).as_py() or 0),
        error_types={r["error_type"]: r["error_type_count"] for r in counts},
        cost_usd=cost,
        cost_missing_rows=missing,
        scores=[c[len(SCORE_PREFIX) :] for c in names if c.startswith(SCORE_PREFIX)],
    )
