"""Exact token counts from a server's tokenizer, for streams that carry no usage.

llama-cpp-python's server, for one, sends no usage in streams even when asked.
These servers offer a tokenizer endpoint instead (at the server root):

    llamacpp          llama.cpp          POST /tokenize {"content"}        -> {"tokens"}
    vllm              vLLM               POST /tokenize {"prompt"|"messages"} -> {"count"}
    llama-cpp-python  llama-cpp-python   POST /extras/tokenize/count {"input"} -> {"count"}

The answer's count is exact. The prompt's is exact on vLLM (which applies
the chat template); on the others it counts the messages' text without the
template's few tokens.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import anyio
import orjson

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.prompts.text import messages_text
from llamabatch.wire.request import HttpRequest, auth_headers
from llamabatch.wire.response import Response
from llamabatch.wire.transport import Transport

log = logging.getLogger(__name__)
TOKENIZE_TIMEOUT_S: Final = 10.0
_PATHS: Final = {
    "llamacpp": "/tokenize",
    "vllm": "/tokenize",
    "llama-cpp-python": "/extras/tokenize/count",
}


def server_root(base_url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000`: tokenizers live beside the API version."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def tokenize_request(
    kind: str, model: ModelConfig, api_key: str | None, text: str | None, messages: Any = None
) -> HttpRequest:
    """The request counting `text` (or, on vLLM, the chat `messages`) on a `kind` server."""
    body: dict[str, Any]
    if kind == "llamacpp":
        body = {"content": text or ""}
    elif kind == "vllm":
        body = {"model": model.model}
        body.update({"messages": messages} if text is None else {"prompt": text})
        body["add_special_tokens"] = text is None
    else:
        body = {"input": text or ""}
    headers = {"Content-Type": "application/json", **auth_headers(model, api_key)}
    assert model.base_url is not None
    url = server_root(model.base_url) + _PATHS[kind]
    return HttpRequest(url=url, headers=headers, body=orjson.dumps(body), stream=False)


def parse_count(body: bytes) -> int:
    """The count in a tokenizer's answer (`count`, or the length of `tokens`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("count"), int):
            return int(data["count"])
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
    raise RequestError("protocol", "tokenizer answer has no count")


class TokenCounter:
    """Counts one model's prompts and answers with its server's tokenizer."""

    def __init__(self, model: ModelConfig, api_key: str | None, kind: str) -> None:
        self.model = model
        self.api_key = api_key
        self.kind = kind
        self._overhead: int | None = None if kind == "llama-cpp-python" else 0
        self._overhead_lock = anyio.Lock()

    @classmethod
    def for_model(cls, model: ModelConfig, api_key: str | None) -> TokenCounter | None:
        return cls(model, api_key, model.tokenize) if model.tokenize else None

    async def fill(self, transport: Transport, resp: Response, messages: Any) -> None:
        """Set `resp`'s counts from the tokenizer; on any failure leave them to estimation."""
        answer = resp.text + "".join(resp.reasoning_parts)
        try:
            completion = await self.count(transport, answer)
            if self.kind == "vllm":
                prompt = await self._fetch(
                    transport, tokenize_request(self.kind, self.model, self.api_key, None, messages)
                )
            else:
                prompt = await self.count(transport, messages_text(messages))
        except RequestError as exc:
            log.warning("%s: tokenizer unavailable, estimating tokens: %s", self.model.name, exc)
            return
        resp.set_usage(prompt, completion, None)
        resp.usage_source = "tokenized"

    async def count(self, transport: Transport, text: str) -> int:
        """Tokens in `text`, without the BOS token llama-cpp-python's counter adds."""
        if not text:
            return 0
        if self._overhead is None:
            async with self._overhead_lock:  # measured once, not by every worker at the start
                if self._overhead is None:
                    self._overhead = await self._fetch(transport, self._request(""))
        return max(0, await self._fetch(transport, self._request(text)) - self._overhead)

    def _request(self, text: str) -> HttpRequest:
        return tokenize_request(self.kind, self.model, self.api_key, text)

    async def _fetch(self, transport: Transport, request: HttpRequest) -> int:
        status, body = await transport.fetch(request, TOKENIZE_TIMEOUT_S)
        if not 200 <= status < 300:
            raise RequestError("protocol", f"tokenizer answered HTTP {status}")
        return parse_count(body)
