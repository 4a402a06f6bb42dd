"""The viewer's pages as HTML. Every value from results, prompts or manifests is escaped.

No inline script or style: the pages load `/static/viewer.js` and `viewer.css`
only, and charts are `<img>`s of SVG served apart, so the Content-Security-Policy
can forbid everything else.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from llamabatch.report.html import chart_notes, headline_html, html_table
from llamabatch.report.summary import at_least
from llamabatch.report.tables import Report, tables
from llamabatch.results.schema import SCORE_PREFIX
from llamabatch.view.rows import PAGE_SIZE, Page, RowQuery
from llamabatch.view.summary import RunSummary


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, params: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> str:
    query = urlencode(list(params.items()) if isinstance(params, Mapping) else list(params))
    return path + ("?" + query if query else "")


def run_url(key: str, tail: str = "") -> str:
    return f"/run/{quote(key, safe='')}{tail}"


def layout(title: str, body: str, *, poll: str | None = None) -> str:
    live = f' data-poll="{e(poll)}"' if poll else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} — llamabatch view</title>"
        '<link rel="stylesheet" href="/static/viewer.css">'
        '<script src="/static/viewer.js" defer></script></head><body>'
        '<header><a class="brand" href="/">llamabatch view</a>'
        '<a href="/">runs</a></header>'
        f'<main id="live"{live}>{body}</main></body></html>\n'
    )


def _seconds(value: Any) -> str:
    return "-" if value is None or _nan(value) else f"{value:.3f}s"


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(value: Any) -> str:
    if value is None or _nan(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return e(value)


# The runs page.


def runs_page(summaries: Sequence[RunSummary]) -> str:
    if not summaries:
        return "<h1>Runs</h1><p>No results directories here yet.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("", "run", "config", "started", "status", "models", "rows", "ok", "errors")
    )
    head += "<th>cost $</th><th>warnings</th>"
    body = "".join(_run_row(s) for s in summaries)
    options = "".join(f'<option value="{e(s.key)}">{e(s.key)}</option>' for s in summaries)
    return (
        "<h1>Runs</h1>"
        '<form method="get" action="/report" id="runs-form">'
        f'<div class="scroll"><table id="runs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
        '<p><button type="submit">Report across the checked runs</button></p></form>'
        '<form method="get" action="/compare" class="inline" id="compare-form">'
        f'<label>baseline <select name="a">{options}</select></label> '
        f'<label>candidate <select name="b">{options}</select></label> '
        '<button type="submit">Compare</button></form>'
    )


def _run_row(s: RunSummary) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.error_types.items()))
    status = e(s.status) + (' <span class="badge live">live</span>' if s.live else "")
    cost = "-"
    if not math.isnan(s.cost_usd):
        cost = at_least(f"{s.cost_usd:.4f}", s.cost_missing_rows)
        if s.cost_missing_rows:  # a lower bound: say by how many rows
            cost += f' <span class="muted">({s.cost_missing_rows:,} rows w/o cost)</span>'
    cells = [
        f'<input type="checkbox" name="run" value="{e(s.key)}" aria-label="{e(s.key)}">',
        f'<a href="{e(run_url(s.key))}">{e(s.key)}</a>',
        e(s.name),
        e(s.started_at[:19].replace("T", " ")),
        status,
        e(", ".join(s.models)),
        f"{s.rows:,}",
        f"{s.ok:,}",
        f"{s.errors:,}" + (f' <span class="muted">({e(kinds)})</span>' if kinds else ""),
        cost,
        "".join(f'<div class="warning">{e(w)}</div>' for w in s.warnings),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


# A run's page, and the report across runs: the report's tables with charts as images.


def report_body(report: Report, chart_url: str, charts: Sequence[str]) -> str:
    figures = "".join(
        f'<figure><img id="chart-{e(c)}" alt="{e(c)} chart" '
        f'src="{e(chart_url.replace("{name}", c))}"></figure>'
        for c in charts
    )
    notes = "".join(
        f'<p class="muted">{e(n)}</p>' for n in chart_notes(report, dict.fromkeys(charts, ""))
    )
    warnings = "".join(f'<p class="warning">{e(w)}</p>' for w in report.results.warnings)
    return (
        warnings
        + headline_html(report)
        + "".join(html_table(t) for t in tables(report))
        + f'<h2 id="charts">Charts</h2><div class="charts">{figures}</div>{notes}'
    )


def run_page(summary: RunSummary, report: Report | None, charts: Sequence[str]) -> str:
    links = f'<nav class="tabs"><a href="{e(run_url(summary.key, "/rows"))}">rows</a></nav>'
    head = (
        f'<h1>{e(summary.key)}</h1><p class="muted">config {e(summary.name or "-")} · '
        f"started {e(summary.started_at[:19].replace('T', ' '))} · {e(summary.status)}"
        + (' <span class="badge live">live</span>' if summary.live else "")
        + f" · {summary.rows:,} rows</p>"
        + links
    )
    if report is None:
        return head + "<p>No rows stored yet.</p>"
    return head + report_body(report, run_url(summary.key, "/chart/{name}.svg"), charts)


def across_page(keys: Sequence[str], report: Report, charts: Sequence[str]) -> str:
    params = [("run", k) for k in keys]
    chart_url = url("/report/chart/{name}.svg", params).replace("%7Bname%7D", "{name}")
    names = ", ".join(keys)
    return f'<h1>Report across {len(keys)} runs</h1><p class="muted">{e(names)}</p>' + report_body(
        report, chart_url, charts
    )


# The rows page.


def rows_page(
    key: str,
    query: RowQuery,
    page: Page,
    choices: Mapping[str, Sequence[str]],
    scores: Sequence[str],
) -> str:
    form = _filters(key, query, choices, scores)
    if page.rows:
        columns = list(page.rows[0])
        head = "".join(f"<th>{e(_header(c))}</th>" for c in columns)
        body = "".join(_row(key, r, columns) for r in page.rows)
        table = (
            f'<div class="scroll"><table id="rows"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    else:
        table = '<p id="no-rows">No rows match.</p>'
    first = query.page * PAGE_SIZE + 1
    counted = f" of {page.total:,}" if page.total is not None else ""
    shown = f"rows {first:,}–{first + len(page.rows) - 1:,}{counted}" if page.rows else ""
    pager = []
    if query.page > 0:
        prev = url(run_url(key, "/rows"), query.params(page=query.page - 1))
        pager.append(f'<a rel="prev" href="{e(prev)}">← previous</a>')
    if page.has_next:
        nxt = url(run_url(key, "/rows"), query.params(page=query.page + 1))
        pager.append(f'<a rel="next" href="{e(nxt)}">next →</a>')
    return (
        f'<h1><a href="{e(run_url(key))}">{e(key)}</a> · rows</h1>{form}'
        f'<p class="muted" id="shown">{shown}</p>{table}'
        f'<p class="pager">{" ".join(pager)}</p>'
    )


def _header(column: str) -> str:
    return column[len(SCORE_PREFIX) :] if column.startswith(SCORE_PREFIX) else column


def _row(key: str, row: Mapping[str, Any], columns: Sequence[str]) -> str:
    cells = []
    for c in columns:
        value = row[c]
        if c == "prompt_id":
            link = url(run_url(key, "/prompt"), {"id": str(value)})
            cells.append(f'<td><a href="{e(link)}">{e(value)}</a></td>')
        elif c in ("latency_s", "ttft_s"):
            cells.append(f"<td>{_seconds(value)}</td>")
        elif c == "output_text":
            cells.append(f'<td class="text">{e(value)}</td>')
        else:
            cells.append(f"<td>{_cell(value)}</td>")
    status = "err" if row.get("status") != "ok" else ""
    return f'<tr class="{status}">' + "".join(cells) + "</tr>"


def _select(name: str, label: str, values: Sequence[str], current: str) -> str:
    options = '<option value="">any</option>' + "".join(
        f'<option value="{e(v)}"{" selected" if v == current else ""}>{e(v)}</option>'
        for v in values
    )
    return f'<label>{e(label)} <select name="{e(name)}">{options}</select></label>'


def _filters(
    key: str, query: RowQuery, choices: Mapping[str, Sequence[str]], scores: Sequence[str]
) -> str:
    parts = [
        _select("model", "model", choices.get("model", []), query.model),
        _select("status", "status", choices.get("status", []), query.status),
        _select("error_type", "error", choices.get("error_type", []), query.error_type),
    ]
    if scores:
        parts.append(_select("score", "score", scores, query.score))
        parts.append(_select("verdict", "is", ["pass", "fail"], query.verdict))
    parts.append(
        f'<label>search <input type="search" name="q" value="{e(query.q)}" '
        'placeholder="text in prompts and outputs"></label>'
    )
    return (
        f'<form method="get" action="{e(run_url(key, "/rows"))}" class="filters" id="filters">'
        + " ".join(parts)
        + ' <button type="submit">Filter</button></form>'
    )


# A prompt: every model's output side by side.


def prompt_page(
    key: str, prompt_id: str, text: str | None, rows: Sequence[Mapping[str, Any]]
) -> str:
    expected = next((r.get("expected") for r in rows if r.get("expected") is not None), None)
    parts = [f'<h1><a href="{e(run_url(key))}">{e(key)}</a> · prompt {e(prompt_id)}</h1>']
    if text is not None:
        parts.append(f'<h2>Prompt</h2><pre class="prompt-text">{e(text)}</pre>')
    if expected is not None:
        parts.append(f'<p><b>expected:</b> <span id="expected">{e(expected)}</span></p>')
    if not rows:
        parts.append("<p>No stored rows for this prompt.</p>")
    cells = "".join(output_cell(r) for r in rows)
    parts.append(f'<div class="side-by-side" id="outputs">{cells}</div>')
    return "".join(parts)


def output_cell(row: Mapping[str, Any]) -> str:
    title = f"{row.get('model')}" + (f" · sample {row['sample']}" if row.get("sample") else "")
    badges = "".join(
        f'<span class="badge {"pass" if v >= 0.5 else "fail"}">{e(k[len(SCORE_PREFIX) :])} '
        f"{v:g}</span>"
        for k, v in row.items()
        if k.startswith(SCORE_PREFIX) and isinstance(v, int | float) and not _nan(v)
    )
    facts = (
        f"TTFT {_seconds(row.get('ttft_s'))} · latency {_seconds(row.get('latency_s'))} · "
        f"tokens {_cell(row.get('prompt_tokens'))} in / {_cell(row.get('completion_tokens'))} "
        f"out · {e(row.get('finish_reason') or '-')}"
    )
    if row.get("status") != "ok":
        badges += f'<span class="badge err">{e(row.get("error_type"))}</span>'
        body = f'<pre class="error">{e(row.get("error_message"))}</pre>'
    else:
        body = f'<pre class="output">{e(row.get("output_text"))}</pre>'
    if row.get("reasoning_text"):
        body = (
            f'<details class="reasoning"><summary>reasoning</summary>'
            f"<pre>{e(row['reasoning_text'])}</pre></details>" + body
        )
    if row.get("tool_calls"):
        body += f'<div class="tools"><b>tool calls</b><pre>{e(row["tool_calls"])}</pre></div>'
    return (
        f'<section class="cell" data-model="{e(row.get("model"))}"><h3>{e(title)} {badges}</h3>'
        f'<p class="muted">{facts}</p>{body}</section>'
    )
