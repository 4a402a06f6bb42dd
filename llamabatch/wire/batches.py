"""The OpenAI-shaped Batch API (OpenAI, Together, Groq, the simulator): files, batches, results.

Pure, like the wire formats: this module builds the requests of the Files and
Batches endpoints, writes request lines and reads batch objects and result
lines; `transport.Transport.call` does the HTTP. A request line's `body` is
exactly what the wire format builds for an online, non-streamed request, so a
batch asks what an online run would.

    POST /files (purpose=batch)        -> file id
    POST /batches {input_file_id, ...} -> batch: validating -> in_progress -> finalizing
    GET  /batches/{id}                    -> completed | failed | expired | cancelled
    GET  /files/{output_file_id}/content  -> one result line per request
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.provider import Provider
from llamabatch.wire.request import HttpRequest, auth_headers
from llamabatch.wire.response import Response

CHAT_ENDPOINT: Final = "/v1/chat/completions"
COMPLETION_WINDOW: Final = "24h"
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
LIST_PAGE: Final = 100
_LINE_HEAD: Final = b'{"custom_id":'
_LINE_MIDDLE: Final = b',"method":"POST","url":"' + CHAT_ENDPOINT.encode() + b'","body":'


def custom_id(model: str, prompt_id: str, sample: int) -> str:
    """The id of a row's request line: its key (model names hold no ':')."""
    return f"{model}:{sample}:{prompt_id}"


def split_custom_id(value: str) -> tuple[str, str, int]:
    """(model, prompt_id, sample) of a `custom_id`."""
    model, sample, prompt_id = value.split(":", 2)
    return model, prompt_id, int(sample)


def request_line(line_id: str, request: HttpRequest) -> bytes:
    """One line of a batch input file, around the body the wire format built."""
    return _LINE_HEAD + orjson.dumps(line_id) + _LINE_MIDDLE + request.body + b"}\n"


@dataclass(frozen=True)
class BatchInfo:
    """What a batch object says: its state, files and request counts."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: float | None = None
    finished_at: float | None = None
    errors: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchInfo:
        if isinstance(data.get("job"), dict):  # Together wraps a created batch
            data = data["job"]
        counts = data.get("request_counts") or {}
        finished = [
            data.get(k) for k in ("completed_at", "failed_at", "expired_at", "cancelled_at")
        ]
        return cls(
            id=str(data["id"]),
            status=str(data.get("status", "")).lower(),
            input_file_id=data.get("input_file_id"),
            output_file_id=data.get("output_file_id") or None,
            error_file_id=data.get("error_file_id") or None,
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            created_at=_seconds(data.get("created_at")),
            finished_at=next((_seconds(t) for t in finished if t), None),
            errors=_batch_errors(data.get("errors")),
        )


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _batch_errors(errors: Any) -> str | None:
    """The validation errors of a failed batch, as one line."""
    items = errors.get("data") if isinstance(errors, dict) else errors
    if not isinstance(items, list) or not items:
        return None
    parts = []
    for item in items[:3]:
        if isinstance(item, dict):
            where = f" (line {item['line']})" if item.get("line") is not None else ""
            parts.append(f"{item.get('code') or 'error'}: {item.get('message') or ''}{where}")
    return "; ".join(parts) or None


class BatchEndpoints:
    """The requests of one model's Files and Batches endpoints."""

    def __init__(self, model: ModelConfig, api_key: str | None) -> None:
        assert model.base_url is not None
        self.base = model.base_url
        self.headers = auth_headers(model, api_key)

    def _get(self, path: str) -> HttpRequest:
        return HttpRequest(self.base + path, self.headers, b"", stream=False, method="GET")

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> HttpRequest:
        headers = {"Content-Type": "application/json", **self.headers}
        data = orjson.dumps(body) if body is not None else b""
        return HttpRequest(self.base + path, headers, data, stream=False)

    def upload(self) -> HttpRequest:
        """POST /files; the transport sends the file and its purpose as multipart form data."""
        return HttpRequest(self.base + "/files", self.headers, b"", stream=False)

    def create(self, file_id: str, metadata: Mapping[str, str]) -> HttpRequest:
        body = {
            "input_file_id": file_id,
            "endpoint": CHAT_ENDPOINT,
            "completion_window": COMPLETION_WINDOW,
            "metadata": dict(metadata),
        }
        return self._post("/batches", body)

    def retrieve(self, batch_id: str) -> HttpRequest:
        return self._get(f"/batches/{batch_id}")

    def listing(self, after: str | None = None) -> HttpRequest:
        return self._get(f"/batches?limit={LIST_PAGE}" + (f"&after={after}" if after else ""))

    def cancel(self, batch_id: str) -> HttpRequest:
        return self._post(f"/batches/{batch_id}/cancel")

    def content(self, file_id: str) -> HttpRequest:
        return self._get(f"/files/{file_id}/content")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object answer of the Files or Batches endpoints (a protocol error otherwise)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise RequestError("protocol", f"{what}: the answer is not a JSON object", retryable=True)
    return data


def file_id(body: bytes) -> str:
    data = json_object(body, "file upload")
    found = data.get("id")
    if not isinstance(found, str):
        raise RequestError("protocol", "file upload: the answer has no file id", retryable=True)
    return found


def batch_list(body: bytes) -> tuple[list[BatchInfo], str | None]:
    """The batches of one page of GET /batches, and the id to list after (None: last page)."""
    data = json_object(body, "batch list")
    batches = [BatchInfo.from_json(b) for b in data.get("data") or [] if isinstance(b, dict)]
    more = bool(data.get("has_more")) and batches
    return batches, (data.get("last_id") or batches[-1].id) if more else None


def apply_result(
    line: bytes, provider: Provider, resp: Response
) -> tuple[str, RequestError | None]:
    """Apply one output- or error-file line to `resp`: its custom_id and its error, if it failed."""
    data = orjson.loads(line)
    line_id = str(data["custom_id"])
    response = data.get("response") or {}
    error = data.get("error")
    status = response.get("status_code")
    resp.http_status = status if isinstance(status, int) else None
    body = orjson.dumps(response.get("body"))
    if isinstance(error, dict) and error:
        return line_id, _line_error(error, resp.http_status)
    if resp.http_status is None or not 200 <= resp.http_status < 300:
        return line_id, provider.error_for_status(resp.http_status or 500, {}, body)
    try:
        provider.parse_body(body, resp, 0.0)
    except RequestError as exc:
        return line_id, exc
    return line_id, None


def _line_error(error: Mapping[str, Any], status: int | None) -> RequestError:
    code = str(error.get("code") or "error")
    kind = "server"
    if "expired" in code:
        kind = "timeout"
    elif "rate" in code:
        kind = "rate_limit"
    elif "invalid" in code or "validation" in code:
        kind = "invalid_request"
    message = f"batch line failed: {code}: {error.get('message') or ''}".strip()
    return RequestError(kind, message, http_status=status)
