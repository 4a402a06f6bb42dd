"""Reading runs back: per-model tables, statistics, HTML reports, and `compare` for CI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.report.comparison import Comparison, compare
    from llamabatch.report.html import render_html
    from llamabatch.report.resultset import ResultSet, load_results
    from llamabatch.report.tables import Report, build_report, render_markdown
    from llamabatch.report.thresholds import Thresholds

__getattr__ = lazy_exports(
    __name__,
    {
        "build_report": "llamabatch.report.tables",
        "compare": "llamabatch.report.comparison",
        "Comparison": "llamabatch.report.comparison",
        "load_results": "llamabatch.report.resultset",
        "render_html": "llamabatch.report.html",
        "render_markdown": "llamabatch.report.tables",
        "Report": "llamabatch.report.tables",
        "ResultSet": "llamabatch.report.resultset",
        "Thresholds": "llamabatch.report.thresholds",
    },
)
__all__ = [
    "Comparison",
    "Report",
    "ResultSet",
    "Thresholds",
    "build_report",
    "compare",
    "load_results",
    "render_html",
    "render_markdown",
]
