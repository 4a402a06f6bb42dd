"""The simulator's Batch API: OpenAI's Files and Batches endpoints, answering like its online one.

    POST /v1/files                 multipart (purpose, file) -> a file object
    GET  /v1/files/{id}/content    a file's bytes
    POST /v1/batches               {input_file_id, endpoint, completion_window}
    GET  /v1/batches[/{id}]        list (limit, after) or retrieve
    POST /v1/batches/{id}/cancel

A batch moves validating -> in_progress -> finalizing -> completed as time
passes (`BatchTiming`); when it completes, every line is answered with the same
body the online endpoint gives a non-streamed request (same text, same usage).
Knobs for tests: per-line failures (`line_error_rate`, a 500 in the error
file), expiry (`expire`: the first `expire_done` share of lines answered, the
rest `batch_expired`), a 500 answered to every `poll_error_every`-th poll, and
to the next `create_errors` batch creations (no batch made).
`submitted` counts, per custom_id, how many created batches asked for it; a
phase in `hold` ("upload", "create" — after the batch exists, before it is
answered —, "poll", "download") stops there until `release()`, so a test can
kill a client at exactly that moment (`await reached(phase)`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import BodyPartReader, web

from llamabatch.sim.formats import OPENAI
from llamabatch.sim.plan import make_plan

if TYPE_CHECKING:
    from llamabatch.sim.profile import SimProfile

ENDPOINT = "/v1/chat/completions"


@dataclass
class BatchTiming:
    """How a simulated batch behaves; change it on `SimServer.batches.timing`."""

    validating_s: float = 0.0
    in_progress_s: float = 0.0
    finalizing_s: float = 0.0
    line_error_rate: float = 0.0
    expire: bool = False
    expire_done: float = 0.5
    poll_error_every: int = 0
    create_errors: int = 0


@dataclass
class _Batch:
    data: dict[str, Any]
    lines: list[bytes]
    created: float
    cancelled: bool = False


@dataclass
class SimBatches:
    """The Files and Batches endpoints of one simulator."""

    profile: Callable[[str], SimProfile]
    seed: int = 0
    timing: BatchTiming = field(default_factory=BatchTiming)
    files: dict[str, bytes] = field(default_factory=dict)
    submitted: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _batches: dict[str, _Batch] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)
    _polls: int = 0
    hold: set[str] = field(default_factory=set)
    _reached: dict[str, asyncio.Event] = field(default_factory=dict)
    _release: asyncio.Event | None = None

    def _event(self, phase: str) -> asyncio.Event:
        return self._reached.setdefault(phase, asyncio.Event())

    async def reached(self, phase: str) -> None:
        """Return once a request has stopped at the held `phase`."""
        await self._event(phase).wait()

    def release(self) -> None:
        """Let held requests go on, and hold nothing more."""
        self.hold = set()
        if self._release is not None:
            self._release.set()

    async def _checkpoint(self, phase: str) -> None:
        if phase in self.hold:
            if self._release is None:
                self._release = asyncio.Event()
            self._event(phase).set()
            await self._release.wait()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def _store(self, content: bytes, purpose: str, name: str) -> dict[str, Any]:
        file_id = self._new_id("file")
        self.files[file_id] = content
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
        }

    async def _upload(self, request: web.Request) -> web.Response:
        self.calls["upload"] += 1
        # Chunk by chunk: a request file (up to 200 MB) is more than aiohttp lets `read()` take.
        fields: dict[str, bytes] = {}
        name = "upload.jsonl"
        async for part in await request.multipart():
            if isinstance(part, BodyPartReader) and part.name in ("file", "purpose"):
                data = bytearray()
                while chunk := await part.read_chunk():
                    data += chunk
                fields[part.name] = bytes(data)
                name = part.filename or name if part.name == "file" else name
        if set(fields) != {"file", "purpose"}:
            return _error(400, "multipart form needs 'file' and 'purpose'")
        await self._checkpoint("upload")
        return web.json_response(self._store(fields["file"], fields["purpose"].decode(), name))

    async def _content(self, request: web.Request) -> web.Response:
        self.calls["download"] += 1
        await self._checkpoint("download")
        content = self.files.get(request.match_info["id"])
        if content is None:
            return _error(404, "no such file")
        return web.Response(body=content, content_type="application/jsonl")

    async def _create(self, request: web.Request) -> web.Response:
        self.calls["create"] += 1
        body = await request.json(loads=orjson.loads)
        content = self.files.get(str(body.get("input_file_id")))
        if content is None:
            return _error(400, "input_file_id: no such file")
        if body.get("endpoint") != ENDPOINT:
            return _error(400, f"endpoint must be {ENDPOINT}")
        if self.timing.create_errors > 0:
            self.timing.create_errors -= 1
            return _error(500, "simulated batch creation failure", "server_error")
        lines = content.splitlines()
        ids = [orjson.loads(line)["custom_id"] for line in lines]
        self.submitted.update(ids)
        now = time.time()
        data = {
            "id": self._new_id("batch"),
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata") or {},
        }
        self._batches[data["id"]] = _Batch(data, lines, now)
        await self._checkpoint("create")
        return web.json_response(data)

    async def _retrieve(self, request: web.Request) -> web.Response:
        self.calls["poll"] += 1
        await self._checkpoint("poll")
        self._polls += 1
        every = self.timing.poll_error_every
        if every and self._polls % every == 0:
            return _error(500, "simulated batch endpoint failure", "server_error")
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        return web.json_response(self._advance(batch))

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        ids = sorted(self._batches, reverse=True)  # newest first, like OpenAI
        if after in self._batches:
            ids = ids[ids.index(after) + 1 :]
        page = [self._advance(self._batches[i]) for i in ids[:limit]]
        last = page[-1]["id"] if page else None
        return web.json_response(
            {"object": "list", "data": page, "has_more": len(ids) > limit, "last_id": last}
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        self.calls["cancel"] += 1
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch.data["status"] not in ("completed", "failed", "expired", "cancelled"):
            batch.cancelled = True
            batch.data.update(status="cancelled", cancelled_at=int(time.time()))
        return web.json_response(batch.data)

    def _advance(self, batch: _Batch) -> dict[str, Any]:
        """Move a batch along its states by the time passed since it was created."""
        data, t = batch.data, self.timing
        if batch.cancelled or data["status"] in ("completed", "expired"):
            return data
        elapsed = time.time() - batch.created
        steps = (
            ("validating", t.validating_s),
            ("in_progress", t.in_progress_s),
            ("finalizing", t.finalizing_s),
        )
        for status, duration in steps:
            if elapsed < duration:
                data["status"] = status
                return data
            elapsed -= duration
        self._finish(batch)
        return data

    def _finish(self, batch: _Batch) -> None:
        data = batch.data
        done = len(batch.lines)
        if self.timing.expire:
            done = int(len(batch.lines) * self.timing.expire_done)
        output: list[bytes] = []
        errors: list[bytes] = []
        for n, line in enumerate(batch.lines):
            request = orjson.loads(line)
            if n >= done:
                failure = {"code": "batch_expired", "message": "not run within the window"}
                errors.append(_result(request["custom_id"], None, failure))
                continue
            status, body = self._answer(request)
            target = output if status == 200 else errors
            target.append(_result(request["custom_id"], (status, body), None))
        now = int(time.time())
        data["request_counts"] = {
            "total": len(batch.lines),
            "completed": len(output),
            "failed": len(errors),
        }
        if output:
            data["output_file_id"] = self._store(b"".join(output), "batch_output", "out")["id"]
        if errors:
            data["error_file_id"] = self._store(b"".join(errors), "batch_output", "err")["id"]
        if self.timing.expire:
            data.update(status="expired", expired_at=now)
        else:
            data.update(status="completed", completed_at=now, in_progress_at=now)

    def _answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The online endpoint's reply to the same body, or a simulated failure."""
        body = request.get("body") or {}
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, OPENAI.error_body(
                "'messages' must be a non-empty list", "invalid_request_error", None
            )
        roll = hashlib.blake2b(request["custom_id"].encode(), digest_size=8).digest()
        if int.from_bytes(roll) / 2**64 < self.timing.line_error_rate:
            return 500, OPENAI.error_body("simulated line failure", "server_error", None)
        model = str(body.get("model", "?"))
        plan = make_plan(body, self.profile(model), self.seed, OPENAI.max_tokens(body))
        return 200, OPENAI.completion(model, plan)


def _result(
    custom_id: str, response: tuple[int, dict[str, Any]] | None, error: dict[str, str] | None
) -> bytes:
    line = {
        "id": "req-" + hashlib.blake2b(custom_id.encode(), digest_size=6).hexdigest(),
        "custom_id": custom_id,
        "response": None
        if response is None
        else {"status_code": response[0], "request_id": "sim", "body": response[1]},
        "error": error,
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response(OPENAI.error_body(message, kind, None), status=status)
