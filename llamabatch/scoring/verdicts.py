"""LLM-as-judge, the pure part: the judge's prompt, its verdict parsed, what a verdict stores.

Each verdict is kept as JSON in `verdict_<name>`: the judge's raw reply or the
error of a failed call, and a hash of the request, so a stored verdict whose
request is unchanged is reused instead of calling the judge again. Sending
the requests is `llamabatch.runs.judge`'s job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from llamabatch.config import ModelConfig, ScorerSpec
from llamabatch.prompts.text import content_text, transcript

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
    """The graded prompt as the judge reads it: a lone user message as itself."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return content_text(messages[0].get("content"))
    return transcript(messages)


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


def wanted(spec: ScorerSpec, row: Mapping[str, Any]) -> bool:
    """Whether a judge scorer grades this row (ok, with output, inside its `where`)."""
    if row.get("status") != "ok" or row.get("output_text") is None:
        return False
    return all(row.get(col) in values for col, values in spec.where.items())


def verdict(
    reply: Mapping[str, Any], digest: str, model: ModelConfig, scale: float
) -> dict[str, Any]:
    """What `verdict_<name>` stores for one judge reply (a result row of the judge model)."""
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
