"""How the simulator writes a planned reply in each wire format it speaks.

`plan.py` decides what to say and when (`Plan`); a `SimFormat` turns that into
bytes: OpenAI chat-completion chunks (SSE), Meta's native Llama API events
(SSE, no `[DONE]`) or Ollama's `/api/chat` lines (NDJSON).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Protocol

import orjson

from llamabatch.sim.plan import Plan


class SimFormat(Protocol):
    """One wire format: the bytes of a streamed reply and the JSON of a whole one."""

    content_type: ClassVar[str]

    def max_tokens(self, body: dict[str, Any]) -> Any: ...

    def opening(self, model: str, plan: Plan | None = None) -> bytes: ...

    def delta(self, model: str, text: str, plan: Plan | None = None, index: int = 0) -> bytes: ...

    def closing(self, model: str, plan: Plan, body: dict[str, Any], usage: bool) -> bytes: ...

    def completion(self, model: str, plan: Plan) -> dict[str, Any]: ...

    def error_event(self) -> bytes: ...

    def malformed(self) -> bytes: ...

    def error_body(self, message: str, kind: str, code: str | int | None) -> dict[str, Any]: ...


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _openai_error(message: str, kind: str, code: str | int | None) -> dict[str, Any]:
    """OpenAI's error object (`code` a string or null); vLLM's has the HTTP status as `code`."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class OpenAIFormat:
    """`/v1/chat/completions` chunks, usage when asked for, then `[DONE]`."""

    content_type: ClassVar[str] = "text/event-stream"

    def max_tokens(self, body: dict[str, Any]) -> Any:
        return body.get("max_tokens") or body.get("max_completion_tokens")

    def opening(self, model: str, plan: Plan | None = None) -> bytes:
        role = {"role": "assistant", "content": ""}
        n = plan.sequences if plan is not None else 1
        return b"".join(sse(_chunk(model, role, plan, index=i)) for i in range(n))

    def delta(self, model: str, text: str, plan: Plan | None = None, index: int = 0) -> bytes:
        return sse(_chunk(model, {"content": text}, plan, index=index))

    def closing(self, model: str, plan: Plan, body: dict[str, Any], usage: bool) -> bytes:
        out = b"".join(
            sse(_chunk(model, {}, plan, index=i, finish_reason=choice.finish_reason))
            for i, choice in enumerate(plan.choices)
        )
        if usage and (body.get("stream_options") or {}).get("include_usage"):
            out += sse({**_chunk(model, None, plan), "choices": [], "usage": plan.usage()})
        return out + b"data: [DONE]\n\n"

    def completion(self, model: str, plan: Plan) -> dict[str, Any]:
        return {
            "id": plan.id,
            "object": "chat.completion",
            "created": plan.created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": choice.text},
                    "finish_reason": choice.finish_reason,
                }
                for i, choice in enumerate(plan.choices)
            ],
            "usage": plan.usage(),
        }

    def error_event(self) -> bytes:
        # vLLM's mid-stream error: an error object as an SSE event.
        return sse(_openai_error("overloaded", "InternalServerError", 500))

    def malformed(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "x"\n\n'

    def error_body(self, message: str, kind: str, code: str | int | None) -> dict[str, Any]:
        return _openai_error(message, kind, code)


def _chunk(
    model: str,
    delta: dict[str, Any] | None,
    plan: Plan | None = None,
    *,
    index: int = 0,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One chunk; every chunk of a reply carries its id and creation time, as OpenAI's do."""
    choices = (
        [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    )
    return {
        "id": plan.id if plan is not None else "chatcmpl-sim",
        "object": "chat.completion.chunk",
        "created": plan.created if plan is not None else int(time.time()),
        "model": model,
        "choices": choices,
    }


class LlamaFormat:
    """Meta's native Llama API: `start`, `progress`..., `complete`, `metrics`; no `[DONE]`."""

    content_type: ClassVar[str] = "text/event-stream"

    def max_tokens(self, body: dict[str, Any]) -> Any:
        return body.get("max_completion_tokens")

    def opening(self, model: str, plan: Plan | None = None) -> bytes:
        return _llama_event("start", {"type": "text", "text": ""}, plan)

    def delta(self, model: str, text: str, plan: Plan | None = None, index: int = 0) -> bytes:
        return _llama_event("progress", {"type": "text", "text": text}, plan)

    def closing(self, model: str, plan: Plan, body: dict[str, Any], usage: bool) -> bytes:
        empty = {"type": "text", "text": ""}
        out = _llama_event("complete", empty, plan, stop_reason=plan.finish_reason)
        if usage:
            out += _llama_event("metrics", empty, plan, metrics=_metrics(plan))
        return out

    def completion(self, model: str, plan: Plan) -> dict[str, Any]:
        return {
            "id": plan.id,
            "completion_message": {
                "role": "assistant",
                "content": {"type": "text", "text": plan.text},
                "stop_reason": plan.finish_reason,
            },
            "metrics": _metrics(plan),
        }

    def error_event(self) -> bytes:
        # The Llama API may write a mid-stream error as a bare JSON line, without `data:`.
        return orjson.dumps(_openai_error("overloaded", "server_error", 503)) + b"\n\n"

    def malformed(self) -> bytes:
        return b'data: {"event": {"event_type": "progress", "delta": \n\n'

    def error_body(self, message: str, kind: str, code: str | int | None) -> dict[str, Any]:
        return _openai_error(message, kind, code)


def _llama_event(kind: str, delta: dict[str, Any], plan: Plan | None, **fields: Any) -> bytes:
    rid = plan.id if plan is not None else "sim"
    return sse({"id": rid, "event": {"event_type": kind, "delta": delta, **fields}})


def _metrics(plan: Plan) -> list[dict[str, Any]]:
    usage = plan.usage()
    # The real API sends floats, in no fixed order.
    return [
        {"metric": "num_completion_tokens", "value": float(usage["completion_tokens"])},
        {"metric": "num_prompt_tokens", "value": float(usage["prompt_tokens"]), "unit": "tokens"},
        {"metric": "num_total_tokens", "value": float(usage["total_tokens"]), "unit": "tokens"},
    ]


class OllamaFormat:
    """Ollama's `/api/chat`: one JSON object a line; the last has `done: true` and counts."""

    content_type: ClassVar[str] = "application/x-ndjson"

    def max_tokens(self, body: dict[str, Any]) -> Any:
        return (body.get("options") or {}).get("num_predict")

    def opening(self, model: str, plan: Plan | None = None) -> bytes:
        return b""

    def delta(self, model: str, text: str, plan: Plan | None = None, index: int = 0) -> bytes:
        return orjson.dumps(_ollama_message(model, text, done=False)) + b"\n"

    def closing(self, model: str, plan: Plan, body: dict[str, Any], usage: bool) -> bytes:
        return orjson.dumps(_ollama_final(model, plan, "", usage)) + b"\n"

    def completion(self, model: str, plan: Plan) -> dict[str, Any]:
        return _ollama_final(model, plan, plan.text, True)

    def error_event(self) -> bytes:
        return b'{"error": "an error was encountered while running the model"}\n'

    def malformed(self) -> bytes:
        return b'{"model": "m", "message": {"role": "assistant", "content": \n'

    def error_body(self, message: str, kind: str, code: str | int | None) -> dict[str, Any]:
        return {"error": message}


def _ollama_message(model: str, text: str, *, done: bool) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "message": {"role": "assistant", "content": text},
        "done": done,
    }


def _ollama_final(model: str, plan: Plan, text: str, counts: bool) -> dict[str, Any]:
    final = _ollama_message(model, text, done=True)
    final["done_reason"] = plan.finish_reason
    final["total_duration"] = round((plan.ttft_s + plan.decode_s) * 1e9)
    final["load_duration"] = 1_000_000
    if counts:
        final["prompt_eval_count"] = plan.prompt_tokens
        final["prompt_eval_duration"] = round(plan.ttft_s * 1e9)
        final["eval_count"] = len(plan.tokens)
        final["eval_duration"] = round(plan.decode_s * 1e9)
    return final


OPENAI = OpenAIFormat()
LLAMA = LlamaFormat()
OLLAMA = OllamaFormat()
