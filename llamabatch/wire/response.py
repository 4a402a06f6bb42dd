"""The state of one attempt's response, which the wire formats fill in as events arrive."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

# End-of-turn markers some servers leave at the end of the text (Llama 3, Gemma, ChatML, ...).
STOP_TOKENS: Final = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
    "</s>",
)
# What a chunk carried, as the wire formats report it to `Response.mark`.
ANSWER: Final = "answer"  # answer text or a tool call
REASONING: Final = "reasoning"  # reasoning only


class Response:
    """The state of one attempt's response, filled in as events arrive."""

    __slots__ = (
        "_tool_keys",
        "chunks",
        "completion_source",
        "completion_tokens",
        "done",
        "ended_t",
        "finish_reason",
        "first_answer_t",
        "first_byte_t",
        "first_token_t",
        "headers",
        "http_status",
        "last_token_t",
        "notes",
        "prompt_source",
        "prompt_tokens",
        "reasoning_parts",
        "reasoning_tokens",
        "server_decode_s",
        "server_load_s",
        "server_prompt_s",
        "started_t",
        "text_parts",
        "token_chunks",
        "tool_calls",
        "total_tokens",
    )

    def __init__(self, *, chunk_times: bool = False) -> None:
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.total_tokens: int | None = None
        self.first_byte_t: float | None = None  # the response head's arrival
        self.first_token_t: float | None = None  # first chunk of output: answer, reasoning, tools
        self.first_answer_t: float | None = None  # first chunk of answer text or tool calls
        self.last_token_t: float | None = None
        self.token_chunks = 0
        # With `chunk_times`: (arrival, tokens where the server says) of each output chunk.
        self.chunks: list[tuple[float, int | None]] | None = [] if chunk_times else None
        self.reasoning_tokens: int | None = None
        self.done = False
        self.http_status: int | None = None
        self.headers: Mapping[str, str] | None = None
        self.started_t = 0.0
        self.ended_t = 0.0
        self.tool_calls: list[dict[str, Any]] = []
        self._tool_keys: dict[int | str, dict[str, Any]] = {}
        self.server_prompt_s: float | None = None
        self.server_decode_s: float | None = None
        self.server_load_s: float | None = None
        self.notes: list[str] = []  # what was wrong with the reply but not worth failing it
        # Where each count came from: `server`, `tokenized` or `estimated` (None: not counted).
        self.prompt_source: str | None = None
        self.completion_source: str | None = None

    def mark(self, t: float, *, answer: bool = True, tokens: int | None = None) -> None:
        """Record that a chunk carrying generated output arrived at `t`.

        `answer`: it carried answer text or a tool call (not only reasoning);
        `tokens`: how many tokens it carried, where the server says.
        """
        if self.first_token_t is None:
            self.first_token_t = t
        if answer and self.first_answer_t is None:
            self.first_answer_t = t
        self.last_token_t = t
        self.token_chunks += 1
        if self.chunks is not None:
            self.chunks.append((t, tokens))

    def mark_many(self, first: float, last: float, count: int) -> None:
        """Record `count` chunks of answer text that arrived from `first` to `last`.

        (Their arrival times, when collected, were appended as they were parsed.)
        """
        if self.first_token_t is None or first < self.first_token_t:
            self.first_token_t = first
        if self.first_answer_t is None or first < self.first_answer_t:
            self.first_answer_t = first
        if self.last_token_t is None or last > self.last_token_t:
            self.last_token_t = last
        self.token_chunks += count

    def settle(self) -> None:
        """Put the attempt's times in the order their events had (at its end).

        The head, the tokens and the end are timed on two clocks (kernel stamps
        converted to perf_counter, perf_counter itself), which can disagree by
        microseconds: the head is no later than the first token, chunk times
        never go back, and the end is no earlier than the last event.
        """
        if self.first_token_t is not None and self.first_byte_t is not None:
            self.first_byte_t = min(self.first_byte_t, self.first_token_t)
        last = self.ended_t
        for t in (self.first_byte_t, self.first_token_t, self.first_answer_t, self.last_token_t):
            if t is not None and t > last:
                last = t
        if self.chunks:
            latest = self.chunks[0][0]
            for i, (t, tokens) in enumerate(self.chunks):
                if t < latest:
                    self.chunks[i] = (latest, tokens)
                latest = max(latest, t)
            last = max(last, latest)
        self.ended_t = last

    @property
    def text(self) -> str:
        """The answer, without end-of-turn markers a server left at its end."""
        return strip_stop_tokens("".join(self.text_parts))

    def add_tool_call(self, key: int | str | None, call_id: Any, name: Any, arguments: Any) -> None:
        """Merge one tool-call piece; pieces with the same `key` (index or id) are one call.

        A piece without a key continues the latest call. Arguments arrive as
        string fragments (appended) or, from some servers, as a whole object.
        """
        call = self._tool_keys.get(key) if key is not None else None
        if call is None and key is None and self.tool_calls:
            call = self.tool_calls[-1]
        if call is None:
            call = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            self.tool_calls.append(call)
            if key is not None:
                self._tool_keys[key] = call
        function = call["function"]
        if call_id and not call["id"]:
            call["id"] = str(call_id)
        if name and not function["name"]:
            function["name"] = str(name)
        if isinstance(arguments, str):
            function["arguments"] += arguments
        elif arguments is not None:
            function["arguments"] = orjson.dumps(arguments).decode()

    def extra_columns(self) -> dict[str, Any]:
        """Result columns only some endpoints fill: reasoning, tool calls, server timings."""
        return {
            "reasoning_text": "".join(self.reasoning_parts) or None,
            "tool_calls": orjson.dumps(self.tool_calls).decode() if self.tool_calls else None,
            "reasoning_tokens": self.reasoning_tokens,
            "server_prompt_s": self.server_prompt_s,
            "server_decode_s": self.server_decode_s,
            "server_load_s": self.server_load_s,
        }

    def set_reasoning_tokens(self, value: Any) -> None:
        """Take the server's count of reasoning tokens (within the completion's)."""
        self.reasoning_tokens = _count(value)

    def set_usage(self, prompt: Any, completion: Any, total: Any) -> None:
        """Take the server's token counts; one out of range discards them all (estimated)."""
        values = (prompt, completion, total)
        bad = [
            f"{name}={value!r}"
            for name, value in zip(_USAGE_NAMES, values, strict=True)
            if _is_number(value) and _count(value) is None
        ]
        if bad:
            self.prompt_tokens = self.completion_tokens = self.total_tokens = None
            self.prompt_source = self.completion_source = None
            note = f"server usage out of range ({', '.join(bad)}): estimated instead"
            if note not in self.notes:  # some servers repeat usage on every chunk
                self.notes.append(note)
            return
        self.prompt_tokens, self.completion_tokens, self.total_tokens = map(_count, values)
        self.prompt_source = None if self.prompt_tokens is None else "server"
        self.completion_source = None if self.completion_tokens is None else "server"
        if self.total_tokens is None and None not in (self.prompt_tokens, self.completion_tokens):
            self.total_tokens = self.prompt_tokens + self.completion_tokens  # type: ignore[operator]


_USAGE_NAMES: Final = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_TOKEN_COUNT: Final = 2**53  # far beyond any context; int64 columns and float sums stay exact


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> int | None:
    """A token count from 0 to MAX_TOKEN_COUNT; None for anything else (NaN and inf too)."""
    if not _is_number(value) or not 0 <= value <= MAX_TOKEN_COUNT:
        return None
    return int(value)


def number_or_none(value: Any, scale: float = 1.0) -> float | None:
    """`value * scale` for a JSON number that can be a duration (finite, >= 0), else None."""
    if not _is_number(value) or not 0 <= value <= MAX_TOKEN_COUNT:
        return None
    return float(value) * scale


def strip_stop_tokens(text: str) -> str:
    """Drop end-of-turn markers (`<|eot_id|>`, ...) that a server left at the end of `text`."""
    while text.endswith(STOP_TOKENS):
        token = next(t for t in STOP_TOKENS if text.endswith(t))
        text = text[: -len(token)]
    return text


def content_parts(content: Any) -> tuple[str, str]:
    """(text, reasoning) of a message `content`: a string, `{type, text}`, or a list of chunks.

    Mistral sends lists of `{"type": "text", "text": ...}` and
    `{"type": "thinking", "thinking": [...]}` chunks; Meta's native API a
    single `{"type": "text", "text": ...}` object.
    """
    if isinstance(content, str):
        return content, ""
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return "", ""
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in content:
        if isinstance(chunk, str):
            text.append(chunk)
        elif isinstance(chunk, dict):
            kind = chunk.get("type")
            if kind in ("thinking", "reasoning"):
                inner = chunk.get(kind)
                reasoning.append(inner if isinstance(inner, str) else content_parts(inner)[0])
            elif isinstance(chunk.get("text"), str):
                text.append(chunk["text"])
    return "".join(text), "".join(reasoning)
