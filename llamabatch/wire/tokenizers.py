"""Token counts from a server's tokenizer, for responses that carry no usage.

llama-cpp-python's server, for one, sends no usage in streams even when asked.
These servers offer a tokenizer endpoint instead (at the server root):

    llamacpp          llama.cpp          POST /apply-template {"messages"} -> {"prompt"},
                                         POST /tokenize {"content"}        -> {"tokens"}
    vllm              vLLM               POST /tokenize {"prompt"|"messages"} -> {"count"}
    llama-cpp-python  llama-cpp-python   POST /extras/tokenize/count {"input"} -> {"count"}

A count is `tokenized` only when it is exact for what was sent and generated:
the prompt after the chat template (vLLM's `/tokenize` applies it to `messages`,
llama.cpp's `/apply-template` renders it), the answer as the server generated
it. Anything else the tokenizer counts is a better estimate, and says so
(`estimated`): a prompt without its template (llama-cpp-python), an answer a
stop string ended (the string was generated, then cut, and may or may not be
what stopped it), an answer with reasoning or tool calls (their markup tokens).
A count the server reported is never replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
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
# Whether the server's completion count includes the end-of-sequence token that ended a
# reply (llama.cpp's `n_decoded` and vLLM's `token_ids` do; llama-cpp-python drops it).
_COUNTS_EOS: Final = {"llamacpp": 1, "vllm": 1, "llama-cpp-python": 0}


def server_root(base_url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000`: tokenizers live beside the API version."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def tokenize_request(
    kind: str,
    model: ModelConfig,
    api_key: str | None,
    text: str | None,
    messages: Any = None,
    *,
    tools: Any = None,
    rendered: bool = False,
) -> HttpRequest:
    """The request counting `text` (or, on vLLM, the chat `messages`) on a `kind` server.

    A `rendered` prompt (llama.cpp's `/apply-template` output) is tokenized as the
    chat endpoint does it: with the BOS token, special tokens parsed.
    """
    body: dict[str, Any]
    if kind == "llamacpp":
        body = {"content": text or "", "add_special": rendered}
    elif kind == "vllm":
        body = {"model": model.model}
        if text is None:
            body.update(messages=messages, **({"tools": tools} if tools else {}))
        else:
            body.update(prompt=text, add_special_tokens=False)
    else:
        body = {"input": text or ""}
    return _post(model, api_key, _PATHS[kind], body)


def template_request(model: ModelConfig, api_key: str | None, messages: Any) -> HttpRequest:
    """llama.cpp's `/apply-template`: the prompt its chat endpoint would tokenize."""
    return _post(model, api_key, "/apply-template", {"messages": messages})


def _post(model: ModelConfig, api_key: str | None, path: str, body: Any) -> HttpRequest:
    headers = {"Content-Type": "application/json", **auth_headers(model, api_key)}
    assert model.base_url is not None
    url = server_root(model.base_url) + path
    return HttpRequest(url=url, headers=headers, body=orjson.dumps(body), stream=False)


def parse_count(body: bytes) -> int:
    """The count in a tokenizer's answer (`count`, or the length of `tokens`)."""
    data = _parse(body)
    if isinstance(data, dict):
        if isinstance(data.get("count"), int):
            return int(data["count"])
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
    raise RequestError("protocol", "tokenizer answer has no count")


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def completion_is_exact(resp: Response, params: Mapping[str, Any]) -> bool:
    """Whether re-tokenizing the answer gives what the server generated."""
    if resp.reasoning_parts or resp.tool_calls:
        return False
    return resp.finish_reason == "length" or (
        resp.finish_reason == "stop" and not params.get("stop")
    )


class TokenCounter:
    """Counts what one model's server did not report, with that server's tokenizer."""

    def __init__(
        self,
        model: ModelConfig,
        api_key: str | None,
        kind: str,
        render: Callable[[Any], tuple[str, bool]] | None = None,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.kind = kind
        # The server's own chat template, where the client has it (a server it started).
        self.render = render
        self._overhead: int | None = None if kind == "llama-cpp-python" else 0
        self._overhead_lock = anyio.Lock()
        self._warned = False

    @classmethod
    def for_model(
        cls,
        model: ModelConfig,
        api_key: str | None,
        render: Callable[[Any], tuple[str, bool]] | None = None,
    ) -> TokenCounter | None:
        return cls(model, api_key, model.tokenize, render) if model.tokenize else None

    async def fill(
        self,
        transport: Transport,
        resp: Response,
        messages: Any,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Count the prompt and answer where `resp` has no count; on failure leave them unset."""
        params = params or {}
        try:
            if resp.completion_tokens is None:
                count = await self.count(transport, resp.text + "".join(resp.reasoning_parts))
                exact = completion_is_exact(resp, params)
                if exact and resp.finish_reason == "stop":
                    count += _COUNTS_EOS[self.kind]
                resp.completion_tokens = count
                resp.completion_source = "tokenized" if exact else "estimated"
            if resp.prompt_tokens is None:
                resp.prompt_tokens, exact = await self._prompt(transport, messages, params)
                resp.prompt_source = "tokenized" if exact else "estimated"
        except RequestError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s: tokenizer unavailable, estimating tokens: %s", self.model.name, exc
                )

    async def _prompt(
        self, transport: Transport, messages: Any, params: Mapping[str, Any]
    ) -> tuple[int, bool]:
        """The prompt's tokens, and whether the count covers the chat template (exact)."""
        if self.render is not None and not params.get("tools"):
            prompt, has_bos = self.render(messages)
            count = await self.count(transport, prompt)  # without the BOS the counter adds...
            return count + (0 if has_bos else self._overhead or 0), True  # ...and chat adds
        if self.kind == "vllm":
            request = tokenize_request(
                self.kind, self.model, self.api_key, None, messages, tools=params.get("tools")
            )
            return await self._fetch(transport, request), True
        if self.kind == "llamacpp" and not params.get("tools"):
            status, body = await transport.fetch(
                template_request(self.model, self.api_key, messages), TOKENIZE_TIMEOUT_S
            )
            template = _parse(body) if 200 <= status < 300 else None
            if isinstance(template, dict) and isinstance(template.get("prompt"), str):
                request = tokenize_request(
                    self.kind, self.model, self.api_key, template["prompt"], rendered=True
                )
                return await self._fetch(transport, request), True
        return await self.count(transport, messages_text(messages)), False

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
