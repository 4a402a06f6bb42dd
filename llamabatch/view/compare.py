"""The compare page: `llamabatch compare` on two runs, regressions first, each with the
baseline's and the candidate's outputs side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llamabatch.report.comparison import Comparison, Flip, compare
from llamabatch.report.comparison_output import rule_value
from llamabatch.view.catalog import Run
from llamabatch.view.pages import e, output_cell, run_url, url
from llamabatch.view.rows import prompt_rows


@dataclass(frozen=True)
class Regression:
    """One model's prompt that went from pass to fail on one or more scores."""

    model: str
    prompt_id: str
    flips: list[Flip]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    @property
    def drop(self) -> float:
        return sum(f.baseline - f.candidate for f in self.flips)


def regressions(result: Comparison, baseline: Run, candidate: Run) -> list[Regression]:
    """Prompts that went from pass to fail, the largest drop first, with both rows."""
    grouped: dict[tuple[str, str], list[Flip]] = {}
    for flip in result.flips:
        grouped.setdefault((flip.model, flip.prompt_id), []).append(flip)
    names = {old if old == new else f"{old}→{new}": (old, new) for old, new in result.pairs}
    ids = {prompt for _, prompt in grouped}
    before = _by_key(prompt_rows(baseline.dataset(), ids)) if ids else {}
    after = _by_key(prompt_rows(candidate.dataset(), ids)) if ids else {}
    found = []
    for (model, prompt), flips in grouped.items():
        old, new = names.get(model, (model, model))
        found.append(
            Regression(model, prompt, flips, before.get((old, prompt)), after.get((new, prompt)))
        )
    return sorted(found, key=lambda r: (-r.drop, r.model, r.prompt_id))


def _by_key(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Sample 0 of each (model, prompt)."""
    return {(r["model"], r["prompt_id"]): r for r in rows if not r.get("sample")}


def compare_runs(baseline: Run, candidate: Run) -> tuple[Comparison, list[Regression]]:
    result = compare(baseline.path, candidate.path)
    return result, regressions(result, baseline, candidate)


def compare_page(
    a: str, b: str, result: Comparison, found: Sequence[Regression], keys: Sequence[str]
) -> str:
    verdict = "a check regressed" if result.regressed else "no check regressed"
    mark = "verdict bad" if result.regressed else "verdict"
    rules = sorted(result.rules, key=lambda r: not r.regressed)
    head = "".join(
        f"<th>{h}</th>" for h in ("model", "check", "baseline", "candidate", "change", "limit")
    )
    body = "".join(
        f'<tr class="{"regressed" if r.regressed else ""}"><td>{e(r.model)}</td>'
        f"<td>{e(r.rule)}</td><td>{e(rule_value(r, r.baseline))}</td>"
        f"<td>{e(rule_value(r, r.candidate))}</td><td>{e(r.change)}</td><td>{e(r.limit)}</td>"
        "</tr>"
        for r in rules
    )
    items = (
        "".join(_regression(a, b, r) for r in found) or "<p>No prompt went from pass to fail.</p>"
    )
    return (
        _picker(a, b, keys)
        + f'<h1>{e(b)} against {e(a)}: <span class="{mark}">{e(verdict)}</span></h1>'
        + f"<h2>Regressions: prompts from pass to fail ({len(found)})</h2>"
        + f'<div id="regressions">{items}</div>'
        + f'<h2>Checks</h2><div class="scroll"><table id="checks"><thead><tr>{head}</tr>'
        + f"</thead><tbody>{body}</tbody></table></div>"
        + "".join(f'<p class="muted">{e(n)}</p>' for n in result.notes)
    )


def _regression(a: str, b: str, r: Regression) -> str:
    link = url(run_url(b, "/prompt"), {"id": r.prompt_id})
    scores = ", ".join(f"{f.score} {f.baseline:.3f} → {f.candidate:.3f}" for f in r.flips)
    sides = "".join(
        f"<div><h4>{e(label)}</h4>{output_cell(row) if row else '<p>no row</p>'}</div>"
        for label, row in ((f"before ({a})", r.before), (f"after ({b})", r.after))
    )
    return (
        f'<section class="regression"><h3>{e(r.model)} · '
        f'<a href="{e(link)}">{e(r.prompt_id)}</a> · {e(scores)}</h3>'
        f'<div class="side-by-side">{sides}</div></section>'
    )


def _picker(a: str, b: str, keys: Sequence[str]) -> str:
    def options(current: str) -> str:
        return "".join(
            f'<option value="{e(k)}"{" selected" if k == current else ""}>{e(k)}</option>'
            for k in keys
        )

    return (
        '<form method="get" action="/compare" class="filters">'
        f'<label>baseline <select name="a">{options(a)}</select></label> '
        f'<label>candidate <select name="b">{options(b)}</select></label> '
        '<button type="submit">Compare</button></form>'
    )
