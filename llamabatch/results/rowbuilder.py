"""Turning one finished request into its result row (columns as in `schema.py`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.prompts import Prompt
from llamabatch.prompts.prompt import carried_value
from llamabatch.prompts.text import estimate_prompt_tokens, estimate_tokens
from llamabatch.redact import Redactor
from llamabatch.results.metrics import chunk_columns, timings
from llamabatch.results.schema import COLUMNS
from llamabatch.wire import Response

# Token count sources, most exact first; `usage_source` is the less exact of a row's two.
EXACTNESS = ("server", "tokenized", "estimated")


@dataclass(slots=True)
class Job:
    """One (prompt, model, sample) on its way through its attempts."""

    model: ModelConfig
    prompt: Prompt
    sample: int
    params: Mapping[str, Any]
    params_json: str
    token_estimate: int
    turn: int | None = None  # multi-turn: which turn (1-based) this request asks
    messages: list[dict[str, Any]] | None = None  # what was sent, when not the prompt's own
    attempts: int = 0
    queue_s: float = 0.0
    started_wall: float = 0.0
    scheduled_wall: float | None = None  # open loop: when the arrival process sent it


class RowBuilder:
    """Builds rows for one run: fixed columns, carried prompt columns, redacted errors."""

    def __init__(
        self, run_id: str, extra_types: Mapping[str, pa.DataType], redact: Redactor
    ) -> None:
        self.run_id = run_id
        self.redact = redact
        self._blank = dict.fromkeys(COLUMNS)
        self._blank["run_id"] = run_id
        self._blank["cached"] = False
        self._extras = list(extra_types.items())
        # Per model (by identity; the config is held so its id stays its own): the blank
        # row with the model's columns filled, copied for each of its rows.
        self._models: dict[int, tuple[ModelConfig, dict[str, Any]]] = {}

    def build(self, job: Job, resp: Response, error: RequestError | None) -> dict[str, Any]:
        row = self._identity(job)
        prompt, model = job.prompt, job.model
        row["http_status"] = resp.http_status
        if error is None:
            _fill_ok(row, job.messages or prompt.messages, resp)
            if model.stream:
                row.update(chunk_columns(resp))
        else:
            row.update(
                status="error",
                error_type=error.error_type,
                error_message=self.redact(error.message),
                http_status=error.http_status or resp.http_status,
                latency_s=max(0.0, resp.ended_t - resp.started_t),
            )
        notes = resp.notes
        if self.redact.secrets and self._scrub(row):
            notes = [*notes, "a known secret (API key or header value) was replaced by ***"]
        if notes:
            row["notes"] = "; ".join(notes)
        return row

    def from_cache(self, job: Job, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The row of a request answered from the response cache (nothing was sent)."""
        row = self._identity(job)
        row.update((k, v) for k, v in stored.items() if k in row)
        row.update(status="ok", cached=True)
        return row

    def _identity(self, job: Job) -> dict[str, Any]:
        """A fresh row with what the job itself says: key, prompt columns, attempts, times."""
        prompt, model = job.prompt, job.model
        known = self._models.get(id(model))
        if known is None or known[0] is not model:
            blank = {**self._blank, "model": model.name, "provider": model.provider}
            blank["model_id"] = model.model
            known = self._models[id(model)] = (model, blank)
        row = known[1].copy()
        for name, arrow_type in self._extras:
            row[name] = carried_value(prompt.extra.get(name), arrow_type)
        # Item by item: a row is built per request, and update(**kw) builds a dict first.
        row["prompt_id"] = prompt.id
        row["prompt_hash"] = prompt.content_hash
        row["sample"] = job.sample
        row["turn"] = job.turn
        row["attempts"] = job.attempts
        row["queue_s"] = job.queue_s
        row["request_params"] = job.params_json
        now = time.time()
        row["started_at"] = int((job.started_wall or now) * 1e6)
        row["finished_at"] = int(now * 1e6)
        if job.scheduled_wall is not None:
            row["scheduled_at"] = int(job.scheduled_wall * 1e6)
        row["expected"] = prompt.expected if job.turn is None else prompt.expected_for(job.turn)
        return row

    def _scrub(self, row: dict[str, Any]) -> bool:
        """Replace known secrets in every string of `row` (a server may echo a key back)."""
        found = False
        for key, value in row.items():
            if isinstance(value, str):
                clean = self.redact.values(value)
                if clean is not value:
                    row[key] = clean
                    found = True
        return found


def _fill_ok(row: dict[str, Any], messages: list[dict[str, Any]], resp: Response) -> None:
    text = resp.text
    prompt_tokens, prompt_source = resp.prompt_tokens, resp.prompt_source
    if prompt_tokens is None:
        prompt_tokens, prompt_source = estimate_prompt_tokens(messages), "estimated"
    completion_tokens, completion_source = resp.completion_tokens, resp.completion_source
    if completion_tokens is None:
        completion_tokens = estimate_tokens(text + "".join(resp.reasoning_parts))
        completion_source = "estimated"
    total = resp.total_tokens
    if total is None or prompt_source != "server" or completion_source != "server":
        total = prompt_tokens + completion_tokens
    row["status"] = "ok"
    row["output_text"] = text
    row["finish_reason"] = resp.finish_reason
    row["prompt_tokens"] = prompt_tokens
    row["completion_tokens"] = completion_tokens
    row["total_tokens"] = total
    row["prompt_tokens_source"] = prompt_source
    row["completion_tokens_source"] = completion_source
    row["usage_source"] = max(prompt_source, completion_source, key=EXACTNESS.index)
    row.update(timings(resp, completion_tokens))
    row.update(resp.extra_columns())
