"""LLM-as-judge scorers, the driving part: send the judge requests, store the verdicts.

Judge requests run through the same `Engine` as a run — the judge model's
lane with its concurrency, rpm/tpm limits, retries and timeouts. A `Judge` is
entered once (`async with`) around a whole re-score, so the transport and any
server it needs are started once, however many results parts it grades.
The prompts and verdicts themselves are `llamabatch.scoring.verdicts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llamabatch.config import ModelConfig, RunConfig, ScorerSpec
from llamabatch.engine import Engine, Lane
from llamabatch.errors import ConfigError
from llamabatch.prompts import Layout, Prompt, PromptSet
from llamabatch.redact import Redactor
from llamabatch.results import DoneIndex, RowBuilder
from llamabatch.results.schema import score_column, verdict_column
from llamabatch.runs.servers import local_servers
from llamabatch.scoring import RescoreReport, Scoring, rescore
from llamabatch.scoring.similarity import compared, cosine
from llamabatch.scoring.verdicts import (
    DEFAULT_PARAMS,
    judge_messages,
    prompt_text,
    request_hash,
    verdict,
    wanted,
)
from llamabatch.wire import Transport


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
    """Fills `score_<name>` and `verdict_<name>` of judge scorers for lists of rows.

    Use as `async with Judge(specs, config) as judge: await judge(rows)`.
    """

    def __init__(self, specs: Sequence[ScorerSpec], config: RunConfig) -> None:
        self.specs = tuple(specs)
        self.config = dataclasses.replace(config, models=config.judge_models, repeats=1)
        self.keys = {m.name: m.resolve_api_key() for m in config.judge_models}  # fail early
        self._prompts: dict[str, str] | None = None
        self._stack: AsyncExitStack | None = None
        self._transport: Transport | None = None
        self._models: dict[str, ModelConfig] = {}

    async def __aenter__(self) -> Judge:
        async with AsyncExitStack() as stack:
            transport = Transport(max_response_bytes=self.config.engine.max_response_bytes)
            self._transport = await stack.enter_async_context(transport)
            started = await stack.enter_async_context(local_servers(self.config))
            self._models = {m.name: m for m in started.models}
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    def prompts(self) -> dict[str, str]:
        """Prompt texts by id, read once from the run's prompt set."""
        if self._prompts is None:
            path = self.config.input
            if not Path(path).is_file():
                raise ConfigError(f"{path}: the prompt set is needed by judge scorers; not found")
            prompts = PromptSet(path, layout=Layout.of(self.config))
            self._prompts = {p.id: prompt_text(p.messages) for p in prompts}
        return self._prompts

    async def __call__(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """Score the rows that need it; returns (model calls made, failed ones)."""
        calls = errors = 0
        for spec in self.specs:
            score = self._similarity if spec.type == "similarity" else self._judge
            made, failed = await score(spec, rows)
            calls, errors = calls + made, errors + failed
        return calls, errors

    async def _similarity(self, spec: ScorerSpec, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """`score_<name>`: the cosine of each row's output and its expected text, as embedded
        by the scorer's model (texts that repeat are embedded once)."""
        model = self._models[spec.options["model"]]
        column = score_column(spec.name)
        pairs = {}
        for i, row in enumerate(rows):
            row[column] = None
            if (pair := compared(spec, row)) is not None:
                pairs[i] = pair
        texts = sorted({t for pair in pairs.values() for t in pair if isinstance(t, str)})
        if not texts:
            return 0, 0
        requests: list[tuple[list[dict[str, str]], dict[str, Any]]] = [
            ([{"role": "user", "content": t}], {}) for t in texts
        ]
        replies = await self._send(model, requests)
        vectors = {t: replies[str(n)].get("embedding") for n, t in enumerate(texts)}
        failed = 0
        for i, (own, expected) in pairs.items():
            a = vectors.get(own) if isinstance(own, str) else own
            b = vectors.get(expected)
            if a is None or b is None:
                failed += 1
                continue
            rows[i][column] = cosine(a, b)
        return len(texts), failed

    async def _judge(self, spec: ScorerSpec, rows: list[dict[str, Any]]) -> tuple[int, int]:
        model = self._models[spec.options["model"]]
        params = {**DEFAULT_PARAMS, **spec.options.get("params", {})}
        score_col, verdict_col = score_column(spec.name), verdict_column(spec.name)
        pending: list[tuple[dict[str, Any], list[dict[str, str]], str]] = []
        for row in rows:
            row.setdefault(verdict_col, None)
            row[score_col] = None
            if not wanted(spec, row):
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
        failed = 0
        for i, (row, _, digest) in enumerate(pending):
            record = verdict(replies[str(i)], digest, model, spec.options["scale"])
            row[score_col] = record.get("score")
            row[verdict_col] = orjson.dumps(record).decode()
            failed += record["status"] != "ok"
        return len(pending), failed

    async def _send(
        self, model: ModelConfig, requests: list[tuple[list[dict[str, str]], dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        assert self._transport is not None, "use `async with Judge(...)`"
        prompts = [Prompt(id=str(i), messages=m, params=p) for i, (m, p) in enumerate(requests)]
        capture = _Capture()
        config = dataclasses.replace(self.config, models=(model,))
        engine = Engine(
            config=config,
            lanes=[Lane.build(model, config, self.keys[model.name])],
            transport=self._transport,
            sink=capture,
            rows=RowBuilder("judge", {}, Redactor(config.secrets())),
        )
        await engine.run(_Source(prompts), DoneIndex())
        return capture.rows


async def rescore_judged(
    output: Path, scoring: Scoring, judge: Judge | None, *, only_stale: bool = False
) -> RescoreReport:
    """`rescore` with the judge (if any) entered around it, so it starts its servers once."""
    if judge is None:
        return await rescore(output, scoring, only_stale=only_stale)
    async with judge:
        return await rescore(output, scoring, only_stale=only_stale, judge=judge)
