"""What a request may carry: reserved names, known settings, roles and content, per wire format.

A leaf that `config` (`[defaults]`, a model's `params`) and `prompts` (a
row's `params` and `messages`) both check against, so a typo, a wrong type
or an out-of-range number is refused before anything is sent:

    reserved      model, messages, stream, stream_options, n: the config and the
                  prompt decide them (a row cannot swap the model under its label)
    known         each setting's type and range, and the wire formats that take it
    extra_body    a table of settings a server takes that are not known here,
                  merged into the request body untouched

Problems come back as text naming the setting (`params.temprature is not a
request setting (did you mean temperature?) ...`); callers add the file and row.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

RESERVED_PARAMS: Final = ("model", "messages", "stream", "stream_options", "n")
# What an OpenAI Batch input file's `body` may hold that its importer drops (with a note):
# the config decides the model and whether to stream.
IMPORT_DROPPED_PARAMS: Final = ("model", "stream", "stream_options")
EXTRA_BODY: Final = "extra_body"
_RESERVED_WHY: Final = {
    "model": "the model's `model` setting decides it",
    "messages": "the prompt decides them",
    "stream": "set `stream` on the [[models]] entry",
    "stream_options": "llamabatch asks for usage itself when it streams",
    "n": "use [run] repeats for several samples",
}

# The wire formats whose settings differ; the simulator speaks OpenAI's.
FORMATS: Final = ("openai", "llama", "ollama")
_O, _L, _OL = "openai", "llama", "ollama"
ROLES: Final[Mapping[str, frozenset[str]]] = {
    _O: frozenset({"system", "developer", "user", "assistant", "tool"}),
    _L: frozenset({"system", "user", "assistant", "tool", "ipython"}),
    _OL: frozenset({"system", "user", "assistant", "tool"}),
}
ALL_ROLES: Final = frozenset().union(*ROLES.values())
# Roles other tools write, and the one meant (ShareGPT's human/gpt, Gemini's model).
_ROLE_MEANT: Final = {
    "human": "user",
    "usr": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "sys": "system",
}
# Content part types a list `content` may hold (Ollama's /api/chat takes only a string).
PART_TYPES: Final[Mapping[str, frozenset[str]]] = {
    _O: frozenset({"text", "image_url", "input_audio", "file", "refusal"}),
    _L: frozenset({"text", "image_url"}),
    _OL: frozenset(),
}
INT64: Final = 2**63

Check = Callable[[Any], str | None]


def wire_format(provider: str) -> str:
    """The settings dialect of a config's `provider` (`sim` speaks OpenAI's)."""
    return _O if provider == "sim" else provider


def _number(low: float | None = None, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be {_range(low, high)}, got {value!r}"
        return None

    return check


def _integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if not -INT64 <= value < INT64:
            return f"is out of range, got {value!r}"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be {_range(low, high)}, got {value!r}"
        return None

    return check


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _of(kinds: type | tuple[type, ...], what: str, choices: Iterable[Any] = ()) -> Check:
    allowed = tuple(choices)

    def check(value: Any) -> str | None:
        if isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        ):
            return f"must be {what}, got {value!r}"
        if not isinstance(value, kinds):
            return f"must be {what}, got {value!r}"
        if allowed and isinstance(value, str) and value not in allowed:
            return f"must be one of {', '.join(map(str, allowed))}, got {value!r}"
        return None

    return check


def _stop(value: Any) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    ):
        return None
    return f"must be a string or a list of strings, got {value!r}"


def _response_format(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return f'must be a table with a "type" (text, json_object, json_schema), got {value!r}'
    return None


def _tools(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        return f"must be a list of tool tables, got {value!r}"
    return None


def _logit_bias(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be a table of token id -> bias, got {value!r}"
    for token, bias in value.items():
        if not str(token).isdigit():
            return f"keys must be token ids, got {token!r}"
        if problem := _number(-100, 100)(bias):
            return f"[{token!r}] {problem}"
    return None


@dataclass(frozen=True, slots=True)
class Setting:
    """A known request setting: what its value must be, and the wire formats that take it."""

    check: Check
    formats: frozenset[str]


def _s(check: Check, *formats: str) -> Setting:
    return Setting(check, frozenset(formats))


_ANY: Final = (_O, _L, _OL)
_KEEP_ALIVE: Final = _of((str, int, float), 'a duration ("5m") or seconds')
# Ollama's own option names (`options` of /api/chat) that people write in configs.
_OLLAMA_OPTIONS: Final = {
    "num_predict": _s(_integer(-2), _OL),
    "num_ctx": _s(_integer(1), _OL),
    "num_keep": _s(_integer(-1), _OL),
    "num_batch": _s(_integer(1), _OL),
    "num_gpu": _s(_integer(-1), _OL),
    "num_thread": _s(_integer(0), _OL),
    "repeat_penalty": _s(_number(0), _OL),
    "repeat_last_n": _s(_integer(-1), _OL),
    "typical_p": _s(_number(0, 1), _OL),
    "mirostat": _s(_integer(0, 2), _OL),
    "mirostat_eta": _s(_number(0), _OL),
    "mirostat_tau": _s(_number(0), _OL),
    "keep_alive": _s(_KEEP_ALIVE, _OL),
}
CHAT_SETTINGS: Final[Mapping[str, Setting]] = {
    "temperature": _s(_number(0, 2), *_ANY),
    "top_p": _s(_number(0, 1), *_ANY),
    "top_k": _s(_integer(-1), *_ANY),
    "min_p": _s(_number(0, 1), _O, _OL),
    "max_tokens": _s(_integer(1), *_ANY),
    "max_completion_tokens": _s(_integer(1), _O, _L),
    "min_tokens": _s(_integer(0), _O),
    "stop": _s(_stop, _O, _OL),
    "seed": _s(_integer(), _O, _OL),
    "frequency_penalty": _s(_number(-2, 2), _O, _OL),
    "presence_penalty": _s(_number(-2, 2), _O, _OL),
    "repetition_penalty": _s(_number(0, 2), *_ANY),
    "response_format": _s(_response_format, *_ANY),
    "tools": _s(_tools, *_ANY),
    "tool_choice": _s(_of((str, dict), "a table or one of", ("none", "auto", "required")), _O, _L),
    "parallel_tool_calls": _s(_of(bool, "true or false"), _O),
    "logprobs": _s(_of(bool, "true or false"), _O, _OL),
    "top_logprobs": _s(_integer(0, 20), _O, _OL),
    "logit_bias": _s(_logit_bias, _O),
    "user": _s(_of(str, "a string"), _O, _L),
    "ignore_eos": _s(_of(bool, "true or false"), _O),
    "reasoning_effort": _s(_of(str, "a string"), _O),
    "service_tier": _s(_of(str, "a string"), _O),
    "chat_template_kwargs": _s(_of(dict, "a table"), _O),
    "think": _s(_of((bool, str), "true, false or low/medium/high"), _OL),
    "format": _s(_of((str, dict), '"json" or a JSON schema table'), _OL),
    **_OLLAMA_OPTIONS,
}
EMBED_SETTINGS: Final[Mapping[str, Setting]] = {
    "dimensions": _s(_integer(1), _O, _OL),
    "encoding_format": _s(_of(str, "float or base64", ("float", "base64")), _O),
    "user": _s(_of(str, "a string"), _O),
    "truncate": _s(_of(bool, "true or false"), _OL),
    "keep_alive": _s(_KEEP_ALIVE, _OL),
    "num_ctx": _s(_integer(1), _OL),
}


def did_you_mean(word: str, choices: Iterable[str], meant: Mapping[str, str] | None = None) -> str:
    """` (did you mean X?)` for the closest of `choices`, or ''."""
    guess = (meant or {}).get(word.lower())
    if guess is None:
        close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f" (did you mean {guess}?)" if guess else ""


def params_problem(
    params: Mapping[str, Any],
    where: str = "params",
    *,
    provider: str | None = None,
    task: str = "chat",
) -> str | None:
    """What is wrong with a table of request settings, or None.

    Without `provider` a setting known to any wire format passes (a prompt set
    is checked before it meets its models); with one, only that format's.
    """
    known = EMBED_SETTINGS if task == "embed" else CHAT_SETTINGS
    fmt = None if provider is None else wire_format(provider)
    for key, value in params.items():
        if key in RESERVED_PARAMS:
            return f"{where}.{key} is reserved: {_RESERVED_WHY[key]}"
        if key == EXTRA_BODY:
            problem = _extra_body_problem(value, f"{where}.{key}")
        elif (setting := known.get(key)) is None:
            return (
                f"{where}.{key} is not a request setting{did_you_mean(key, known)}; "
                f"a setting your server takes that llamabatch does not know goes in "
                f"{where}.{EXTRA_BODY}"
            )
        elif fmt is not None and fmt not in setting.formats:
            return (
                f"{where}.{key} is not a setting of the {fmt} wire format (it is of "
                f"{', '.join(sorted(setting.formats))}); if your server takes it, move it to "
                f"{where}.{EXTRA_BODY}"
            )
        else:
            problem = setting.check(value)
            problem = problem and f"{where}.{key} {problem}"
        if problem:
            return problem
    return None


def _extra_body_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where} must be a table of settings sent as they are, got {value!r}"
    for key in value:
        if key in RESERVED_PARAMS:
            return f"{where}.{key} is reserved: {_RESERVED_WHY[key]}"
    if not _finite(value):
        return f"{where} holds a number that is not finite (nan or inf cannot be sent as JSON)"
    return None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def role_problem(role: Any, where: str, provider: str | None = None) -> str | None:
    """What is wrong with a message's role (for one wire format, or for any), or None."""
    fmt = None if provider is None else wire_format(provider)
    allowed = ALL_ROLES if fmt is None else ROLES[fmt]
    if isinstance(role, str) and role in allowed:
        return None
    if not isinstance(role, str) or not role:
        return f"{where} must be a non-empty string"
    of = "a chat role" if fmt is None else f"a role of the {fmt} wire format"
    return (
        f"{where} {role!r} is not {of}{did_you_mean(role, allowed, _ROLE_MEANT)}; "
        f"use {', '.join(sorted(allowed))}"
    )


def content_problem(content: Any, where: str, provider: str | None = None) -> str | None:
    """What is wrong with a message's list `content` for a wire format (strings always pass)."""
    if not isinstance(content, list):
        return None
    fmt = None if provider is None else wire_format(provider)
    if fmt == _OL:
        return f"{where} must be a string for Ollama's /api/chat (a list of parts is not taken)"
    allowed = frozenset().union(*PART_TYPES.values()) if fmt is None else PART_TYPES[fmt]
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            return f"{where}[{i}] must be a table with a type ({', '.join(sorted(allowed))})"
        if kind not in allowed:
            of = "" if fmt is None else f" of the {fmt} wire format"
            return (
                f"{where}[{i}].type {kind!r} is not a content part{of}"
                f"{did_you_mean(kind, allowed)}; use {', '.join(sorted(allowed))}"
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            return f"{where}[{i}].text must be a string"
    return None


def messages_problem(
    messages: Iterable[Mapping[str, Any]], provider: str | None = None
) -> str | None:
    """The first problem of a list of messages' roles and content for a wire format, or None."""
    for i, message in enumerate(messages):
        problem = role_problem(
            message.get("role"), f"messages[{i}].role", provider
        ) or content_problem(message.get("content"), f"messages[{i}].content", provider)
        if problem:
            return problem
    return None


def merge_params(*tables: Mapping[str, Any]) -> dict[str, Any]:
    """Settings tables merged, later ones winning; their `extra_body` tables merge key by key."""
    merged: dict[str, Any] = {}
    for table in tables:
        merged.update(table)
    extras = [t[EXTRA_BODY] for t in tables if EXTRA_BODY in t]
    if len(extras) > 1:
        merged[EXTRA_BODY] = {k: v for extra in extras for k, v in extra.items()}
    return merged
