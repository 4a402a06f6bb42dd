"""LLM-as-judge scorers: ask one of the configured models to grade outputs by a rubric.

Judge requests run through the same `Engine` as a run — the judge model's
lane with its concurrency, rpm/tpm limits, retries and timeouts — over the
rows of one results part at a time. Each verdict is kept as JSON in
`verdict_<name>`: the judge's raw reply or the error of a failed call, and a
hash of the request. A stored verdict whose request hash is unchanged is
reused instead of calling the judge again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.engine import Engine, Lane
from llamabatch.errors import ConfigError
from llamabatch.prompts import Prompt, PromptSet
from llamabatch.redact import Redactor
from llamabatch.results import score_column, verdict_column
from llamabatch.resume import DoneIndex
from llamabatch.rows import RowBuilder
from llamabatch.scorers import ScorerSpec
from llamabatch.servers import local_servers
from llamabatch.transport import Transport

SYSTEM: Final = "You are a careful, impartial grader. You follow the rubric exactly."
TEMPLATE: Final = """Grade the RESPONSE to the PROMPT by the RUBRIC.

[PROMPT]
{prompt}

[REFERENCE ANSWER]
{expected}

[RESPONSE]
{response}

[RUBRIC]
{rubric}

Think briefly, then end your reply with one line of the form
SCORE: <a number from 0 to {scale:g}>"""
DEFAULT_PARAMS: Final = {"temperature": 0.0, "max_tokens": 512}
_SCORE_RE: Final = re.compile(r"SCORE:\s*\**\s*([-+]?\d+(?:\.\d+)?)", re.IGNORECASE)


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content"))
    return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in messages)


def judge_messages(spec: ScorerSpec, prompt: str, row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one row."""
    options = spec.options
    user = TEMPLATE.format(
        prompt=prompt,
        expected=row.get("expected") if row.get("expected") is not None else "(none given)",
        response=row.get("output_text") or "",
        rubric=options["rubric"],
        scale=options["scale"],
    )
    return [
        {"role": "system", "content": options.get("system", SYSTEM)},
        {"role": "user", "content": user},
    ]


def parse_verdict(text: str, scale: float) -> float | None:
    """The last `SCORE: n` of a reply as a 0..1 score; None when absent or out of range."""
    found = _SCORE_RE.findall(text or "")
    if not found:
        return None
    value = float(found[-1])
    return value / scale if 0 <= value <= scale else None


def request_hash(
    model: ModelConfig, messages: list[dict[str, str]], params: Mapping[str, Any]
) -> str:
    payload = orjson.dumps([model.model, messages, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=12).hexdigest()


@dataclass
class _Capture:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, row: dict[str, Any]) -> None:
        self.rows[row["prompt_id"]] = row


@dataclass
class _Source:
    prompts: list[Prompt]

    def batches(self, *, only: bytearray | None = None) -> Iterator[list[Prompt]]:
        yield self.prompts


class Judge:
    """Fills `score_<name>` and `verdict_<name>` of judge scorers for a list of rows."""

    def __init__(self, specs: Sequence[ScorerSpec], config: RunConfig) -> None:
        self.specs = tuple(specs)
        self.config = config
        self.models = {m.name: m for m in config.judge_models}
        self.keys = {m.name: m.resolve_api_key() for m in config.judge_models}  # fail early
        self._prompts: dict[str, str] | None = None

    def prompts(self) -> dict[str, str]:
        """Prompt texts by id, read once from the run's prompt set."""
        if self._prompts is None:
            path = self.config.input
            if not Path(path).is_file():
                raise ConfigError(f"{path}: the prompt set is needed by judge scorers; not found")
            self._prompts = {p.id: prompt_text(p.messages) for p in PromptSet(path)}
        return self._prompts

    async def __call__(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """Judge the rows that need it; returns (judge calls made, failed verdicts)."""
        calls = errors = 0
        for spec in self.specs:
            made, failed = await self._judge(spec, rows)
            calls, errors = calls + made, errors + failed
        return calls, errors

    async def _judge(self, spec: ScorerSpec, rows: list[dict[str, Any]]) -> tuple[int, int]:
        model = self.models[spec.options["model"]]
        params = {**DEFAULT_PARAMS, **spec.options.get("params", {})}
        score_col, verdict_col = score_column(spec.name), verdict_column(spec.name)
        pending: list[tuple[dict[str, Any], list[dict[str, str]], str]] = []
        failed = 0
        for row in rows:
            row.setdefault(verdict_col, None)
            row[score_col] = None
            if not _wanted(spec, row):
                row[verdict_col] = None
                continue
            messages = judge_messages(spec, self.prompts().get(row["prompt_id"], ""), row)
            digest = request_hash(model, messages, params)
            old = orjson.loads(row[verdict_col]) if row[verdict_col] else None
            if old and old.get("request_hash") == digest and old.get("status") == "ok":
                row[score_col] = old.get("score")
            else:
                pending.append((row, messages, digest))
        if not pending:
            return 0, 0
        replies = await self._send(model, [(m, params) for _, m, _ in pending])
        for i, (row, _, digest) in enumerate(pending):
            verdict = _verdict(replies[str(i)], digest, model, spec.options["scale"])
            row[score_col] = verdict.get("score")
            row[verdict_col] = orjson.dumps(verdict).decode()
            failed += verdict["status"] != "ok"
        return len(pending), failed

    async def _send(
        self, model: ModelConfig, requests: list[tuple[list[dict[str, str]], dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        prompts = [Prompt(id=str(i), messages=m, params=p) for i, (m, p) in enumerate(requests)]
        capture = _Capture()
        config = dataclasses.replace(self.config, models=(model,), repeats=1)
        async with Transport() as transport, local_servers(config) as config:
            (model,) = config.models
            engine = Engine(
                config=config,
                lanes=[Lane.build(model, config, self.keys[model.name])],
                transport=transport,
                sink=capture,
                rows=RowBuilder("judge", {}, Redactor(config.secrets())),
            )
            await engine.run(_Source(prompts), DoneIndex())
        return capture.rows


def _wanted(spec: ScorerSpec, row: Mapping[str, Any]) -> bool:
    if row.get("status") != "ok" or row.get("output_text") is None:
        return False
    return all(row.get(col) in values for col, values in spec.where.items())


def _verdict(
    reply: Mapping[str, Any], digest: str, model: ModelConfig, scale: float
) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        "judge": model.name,
        "request_hash": digest,
        "attempts": reply.get("attempts"),
        "latency_s": reply.get("latency_s"),
        "prompt_tokens": reply.get("prompt_tokens"),
        "completion_tokens": reply.get("completion_tokens"),
    }
    if reply.get("status") != "ok":
        return {
            **verdict,
            "status": "error",
            "error_type": reply.get("error_type"),
            "error_message": reply.get("error_message"),
            "http_status": reply.get("http_status"),
        }
    text = reply.get("output_text") or ""
    score = parse_verdict(text, scale)
    status = "ok" if score is not None else "no_verdict"
    return {**verdict, "status": status, "score": score, "text": text}
