"""`llamabatch report -o report.html`: one self-contained page (inline CSS and SVG, no network)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pandas as pd

from llamabatch.prompts.text import transcript
from llamabatch.report import charts
from llamabatch.report import resultset as rs
from llamabatch.report.tables import Report, Table, tables
from llamabatch.results import read_manifest
from llamabatch.results.remote import shown
from llamabatch.results.schema import SCORE_PREFIX

DEFAULT_MAX_PROMPTS: Final = 200
MAX_PROMPT_CHARS: Final = 4000

CSS: Final = """
.warning { background: #fff4e5; border-left: 4px solid #e8590c; padding: .5em .8em; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #d0d7de;
  padding-bottom: 4px; } .muted { color: #59636e; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
.prompt { border: 1px solid #d0d7de; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
.prompt h3 { margin: 4px 0; font-size: 15px; }
.outputs { display: grid; gap: 8px; }
.cell { background: #f6f8fa; border-radius: 4px; padding: 6px 8px; min-width: 0; }
.cell pre { white-space: pre-wrap; word-break: break-word; max-height: 260px; overflow: auto;
  margin: 4px 0 0; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
.badge { display: inline-block; border-radius: 10px; padding: 0 7px; font-size: 12px;
  margin-left: 4px; }
.headline { background: #f6f8fa; border-left: 4px solid #4c72b0; padding: .6em 1em .6em 2em; }
.pass { background: #dafbe1; } .fail { background: #ffebe9; } .err { background: #ffebe9; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_plain(v))}</td>" for v in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="muted">{_e(table.note)}</p>' if table.note else ""
    return (
        f'<h2 id="{table.key}">{_e(table.title)}</h2><div class="scroll"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"
    )


def _plain(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render_html(report: Report, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    results = report.results
    sources = ", ".join(shown(p) for p in results.sources)
    sections = [html_table(t) for t in tables(report)]
    sections.append(_charts(report))
    sections.append(_prompts(report, max_prompts))
    nav = " ".join(
        f'<a href="#{key}">{_e(title)}</a>'
        for key, title in [(t.key, t.title) for t in tables(report)]
        + [("charts", "Charts"), ("prompts", "Prompts")]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>llamabatch report — {_e(sources)}</title><style>{CSS}</style></head><body>"
        f'<h1>llamabatch report</h1><p class="muted">{_e(sources)} — {len(results.frame):,} rows, '
        f"{len(results.models)} model(s)</p>"
        + "".join(f'<p class="warning"><strong>{_e(w)}</strong></p>' for w in results.warnings)
        + headline_html(report)
        + f"<nav>{nav}</nav>"
        + "".join(sections)
        + "</body></html>\n"
    )


def report_charts(report: Report) -> dict[str, str]:
    """The report's charts as SVG by key, in reading order; charts without data are left out."""
    frame, models = report.results.frame, report.results.models
    figures = {
        "ttft": charts.cdf_chart(frame, rs.TTFT, models, "TTFT"),
        "latency": charts.cdf_chart(frame, rs.LATENCY, models, "Latency"),
        "throughput": charts.throughput_chart(report.models),
        "cost": charts.cost_chart(report.models),
        "scores": charts.score_chart(report.scores, models),
        "pareto": charts.pareto_chart(report.pareto) if report.pareto else None,
        "trend": charts.trend_chart(report.trend) if report.trend else None,
        "errors": charts.error_chart(frame, models),
    }
    return {key: svg for key, svg in figures.items() if svg is not None}


def chart_notes(report: Report, drawn: Mapping[str, str]) -> list[str]:
    """Why expected charts are missing, so an empty section is not a puzzle."""
    notes = []
    if "latency" not in drawn:
        notes.append("No request succeeded: no timing or throughput charts.")
    if "errors" not in drawn:
        notes.append("No errors: every row succeeded.")
    return notes


def headline_html(report: Report) -> str:
    if not report.headline:
        return ""
    items = "".join(f"<li>{_strong(line)}</li>" for line in report.headline)
    return f'<ul class="headline">{items}</ul>'


def _strong(line: str) -> str:
    """Escape a headline sentence, then turn its Markdown **bold** into <strong>."""
    parts = _e(line).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _charts(report: Report) -> str:
    drawn = report_charts(report)
    body = "".join(f'<figure id="chart-{key}">{svg}</figure>' for key, svg in drawn.items())
    body += "".join(f'<p class="muted">{_e(n)}</p>' for n in chart_notes(report, drawn))
    return f'<h2 id="charts">Charts</h2><div class="charts">{body}</div>'


def _prompts(report: Report, max_prompts: int) -> str:
    results = report.results
    frame = results.frame[results.frame[rs.SAMPLE] == 0]
    order = _prompt_order(frame, results.score_names)
    shown = order[:max_prompts]
    texts = prompt_texts(results.sources, set(shown))
    models = results.models
    picked = frame[frame[rs.PROMPT_ID].isin(set(shown))]
    by_key = {
        (str(r[rs.MODEL]), str(r[rs.PROMPT_ID])): {str(k): v for k, v in r.items()}
        for r in picked.to_dict("records")
    }
    cards = [_prompt_card(pid, models, by_key, texts.get(pid)) for pid in shown]
    intro = (
        f"{len(shown)} of {len(order)} prompts, those where the models' scores disagree most "
        "first" + (" (sample 0 of each)" if results.repeats > 1 else "") + "."
    )
    return f'<h2 id="prompts">Prompts</h2><p class="muted">{_e(intro)}</p>' + "".join(cards)


def _prompt_order(frame: pd.DataFrame, scores: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(frame[rs.PROMPT_ID]))
    if not scores:
        return sorted(ids)
    columns = [SCORE_PREFIX + s for s in scores]
    grouped = frame.groupby(rs.PROMPT_ID)[columns]
    spread = (grouped.max() - grouped.min()).sum(axis=1)
    return sorted(ids, key=lambda pid: (-float(spread.get(pid, 0.0) or 0.0), pid))


def _prompt_card(
    pid: str,
    models: Sequence[str],
    rows: Mapping[tuple[str, str], dict[str, Any]],
    text: str | None,
) -> str:
    first = next((rows[(m, pid)] for m in models if (m, pid) in rows), {})
    expected = first.get(rs.EXPECTED)
    parts = [f"<h3>{_e(pid)}</h3>"]
    if text:
        parts.append(f"<details><summary>prompt</summary><pre>{_e(text)}</pre></details>")
    if expected is not None and not pd.isna(expected):  # rows without one read back as NaN
        parts.append(f"<div><b>expected:</b> {_e(expected)}</div>")
    cells = "".join(_output_cell(m, rows.get((m, pid))) for m in models)
    style = f"grid-template-columns: repeat({len(models)}, minmax(0, 1fr))"
    parts.append(f'<div class="outputs" style="{style}">{cells}</div>')
    return '<div class="prompt">' + "".join(parts) + "</div>"


def _output_cell(model: str, row: Mapping[str, Any] | None) -> str:
    if row is None:
        return f'<div class="cell"><b>{_e(model)}</b> <span class="muted">no row</span></div>'
    badges = []
    for key, value in row.items():
        if key.startswith(SCORE_PREFIX) and value is not None and not _nan(value):
            cls = "pass" if value >= 0.5 else "fail"
            badges.append(
                f'<span class="badge {cls}">{_e(key[len(SCORE_PREFIX) :])} {value:g}</span>'
            )
    if row[rs.STATUS] != rs.OK:
        badges.append(f'<span class="badge err">{_e(row[rs.ERROR_TYPE])}</span>')
        body = _e(row.get("error_message") or "")
    else:
        body = _e(row.get(rs.OUTPUT) or "")
    latency = row.get(rs.LATENCY)
    timing = f' <span class="muted">{latency:.2f}s</span>' if latency is not None else ""
    return f'<div class="cell"><b>{_e(model)}</b>{timing}{"".join(badges)}<pre>{body}</pre></div>'


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def prompt_texts(sources: Iterable[Path], wanted: set[str]) -> dict[str, str]:
    """The prompts' text from the prompt sets the runs read, when those files are still there."""
    from llamabatch.prompts import Layout, PromptSet

    found: dict[str, str] = {}
    for source in sources:
        manifest = read_manifest(source) or {}
        path = (manifest.get("input") or {}).get("path")
        if not path or not Path(path).is_file() or not (wanted - set(found)):
            continue
        try:
            layout = Layout.of(manifest.get("config") or {})
            for prompt in PromptSet(path, layout=layout):
                if prompt.id in wanted:
                    found[prompt.id] = transcript(prompt.messages)[:MAX_PROMPT_CHARS]
        except Exception:  # the report is still useful without prompt texts
            continue
    return found
