from __future__ import annotations

from types import MappingProxyType

from llamabatch.prompts.text import estimate_prompt_tokens


def test_prompt_tokens_are_estimated_from_every_message_kind() -> None:
    messages = [
        {"role": "system", "content": "x" * 8},  # a string: 8 characters
        {"role": "user", "content": [{"type": "text", "text": "y" * 6}, {"type": "image_url"}]},
        MappingProxyType({"role": "user", "content": "z" * 10}),  # a mapping, not a dict
        {"role": "assistant", "content": None},  # a tool-calling turn: no text
        "not a message",
    ]
    # 8 + len("yyyyyy\n") + 10 = 25 characters, about four a token
    assert estimate_prompt_tokens(messages) == 6  # type: ignore[arg-type]
    assert estimate_prompt_tokens([]) == 0
