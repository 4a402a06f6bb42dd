"""What the simulator answers a request with, and when: a deterministic `Plan` per request."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from llamabatch.sim.answers import answer_table, answer_tokens, table_reply
from llamabatch.sim.profile import SimProfile

_TEXT = (
    "the model answers with a short and careful reply about llamas latency tokens and "
    "batching while the server streams each piece as soon as it is ready for the client "
    "to measure time to first token throughput and the whole response under load"
)
_WORDS = _TEXT.split()


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Plan:
    """The reply to one request: its tokens, counts and timing (and its other `n` choices)."""

    tokens: list[str]
    prompt_tokens: int
    finish_reason: str
    ttft_s: float
    decode_s: float
    more: tuple[Plan, ...] = ()  # choices 1 .. n-1 of a request asking for `n`
    id: str = field(default_factory=_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def choices(self) -> tuple[Plan, ...]:
        return (self, *self.more)

    @property
    def sequences(self) -> int:
        return 1 + len(self.more)

    @property
    def length(self) -> int:
        """Tokens of the longest choice: how long generating the reply takes."""
        return max(len(c.tokens) for c in self.choices)

    def usage(self) -> dict[str, int]:
        n = sum(len(c.tokens) for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }

    @property
    def text(self) -> str:
        return "".join(self.tokens)


MAX_CHOICES = 128


def make_plan(
    body: dict[str, Any], profile: SimProfile, seed: int, max_tokens: Any, *, choices: bool = True
) -> Plan:
    """Decide the reply: same prompt, model and seed give the same text.

    With `choices` (the OpenAI format), a request's `n` asks for that many replies.
    """
    n = body.get("n") if choices else 1
    n = n if isinstance(n, int) and 1 <= n <= MAX_CHOICES else 1
    first = _choice(body, profile, seed, max_tokens, 0)
    if n == 1:
        return first
    more = tuple(_choice(body, profile, seed, max_tokens, i) for i in range(1, n))
    return dataclasses.replace(first, more=more)


def _choice(
    body: dict[str, Any], profile: SimProfile, seed: int, max_tokens: Any, index: int
) -> Plan:
    messages = body.get("messages") or []
    options = body.get("options") or {}
    request_seed = body.get("seed", options.get("seed"))
    key = orjson.dumps(
        [body.get("model"), messages, request_seed, seed, *([index] if index else [])],
        option=orjson.OPT_SORT_KEYS,
    )
    if body.get("temperature", options.get("temperature")) and request_seed is None:
        key += random.randbytes(8)
    rng = random.Random(hashlib.blake2b(key, digest_size=8).digest())
    mean = max(1, profile.output_tokens)
    length = max(1, round(rng.lognormvariate(math.log(mean), 0.35)))
    finish = "stop"
    if isinstance(max_tokens, int) and length >= max_tokens:
        length, finish = max_tokens, "length"
    words = [rng.choice(_WORDS) for _ in range(length)]
    tokens = [words[0].capitalize()] + [" " + w for w in words[1:]]
    prompt_tokens = prompt_token_count(messages)
    if profile.answers:
        answer = table_reply(answer_table(profile.answers), messages, rng, profile.accuracy)
        if answer is not None:
            tokens, finish = answer_tokens(answer, max_tokens)
            length = len(tokens)
    jitter = 1.0 + rng.uniform(-profile.jitter, profile.jitter)
    return Plan(
        tokens=tokens,
        prompt_tokens=prompt_tokens,
        finish_reason=finish,
        ttft_s=profile.ttft_s * jitter,
        decode_s=(length - 1) / profile.tokens_per_s * jitter if profile.tokens_per_s > 0 else 0.0,
    )


def render_template(messages: list[Any]) -> str:
    """The simulator's chat template: four tokens of markup around each message's words."""
    return " ".join(
        f"<|{m.get('role')}|> x x {m.get('content', '')} <|end|>"
        for m in messages
        if isinstance(m, dict)
    )


def prompt_token_count(messages: list[Any]) -> int:
    """The prompt's tokens after the chat template (what a real server reports)."""
    return count_tokens(render_template(messages))


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per word (what its replies are made of)."""
    return len(text.split())
