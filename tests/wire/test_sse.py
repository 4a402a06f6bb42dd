from __future__ import annotations

import pytest

from llamabatch.wire.sse import LineSplitter, NDJSONDecoder, SSEDecoder

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b"event: message\r\n"
    b'data: {"b":\r\n'
    b"data: 2}\r\n\r\n"
    b'data: {"c": 3}\r\r'
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b'{"b":\n2}', b'{"c": 3}', b"[DONE]"]


def feed_all(decoder: SSEDecoder | NDJSONDecoder, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(STREAM)])
def test_sse_any_split_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(SSEDecoder(), chunks) == EXPECTED


def test_crlf_split_between_reads_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == [b"x"]
    assert decoder.feed(b"\ndata: y\n\n") == [b"y"]


def test_event_is_dispatched_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x": 1}\n') == []
    assert decoder.feed(b"\n") == [b'{"x": 1}']


def test_data_without_space_and_empty_data_events() -> None:
    assert feed_all(SSEDecoder(), [b"data:abc\n\ndata:\n\ndata: \n\n"]) == [b"abc"]


def test_event_larger_than_256_kb_in_small_reads() -> None:
    big = b'{"content": "' + b"x" * 600_000 + b'"}'
    stream = b"data: " + big + b"\n\n"
    chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    assert feed_all(SSEDecoder(), chunks) == [big]


def test_bare_json_line_is_yielded_for_inspection() -> None:
    assert feed_all(SSEDecoder(), [b'{"error": "boom"}\n']) == [b'{"error": "boom"}']


def test_last_event_without_blank_line_is_flushed_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [b"[DONE]"]


def test_other_fields_are_ignored() -> None:
    assert feed_all(SSEDecoder(), [b"id: 7\nretry: 100\nevent: x\ndata: d\n\n"]) == [b"d"]


def test_ndjson_lines_any_split() -> None:
    stream = b'{"a":1}\n\n{"b":2}\r\n{"c":3}'
    for size in (1, 4, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(NDJSONDecoder(), chunks) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_line_splitter_cr_only() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\rb\r") == [b"a", b"b"]
    assert splitter.feed(b"\nc") == []
    assert splitter.close() == b"c"


def reference_events(stream: bytes) -> list[bytes]:
    """A direct reading of the SSE rules, line by line, for comparison."""
    out, data = [], None
    for line in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line:
            if data:
                out.append(data)
            data = None
        elif line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            data = value if data is None else data + b"\n" + value
        elif line[:1] == b"{":
            out.append(line)
    if data:
        out.append(data)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_streams_and_splits_match_the_reference(seed: int) -> None:
    import random

    rng = random.Random(seed)
    pieces = [
        b'data: {"a": 1}\n\n',
        b"data:x\n\n",
        b": ping\n\n",
        b"data: one\ndata: two\n\n",
        b"event: e\r\ndata: crlf\r\n\r\n",
        b'{"error": "bare"}\n',
        b"data: cr\r\r",
        b"\n",
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(rng.choice(pieces) for _ in range(30))
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 12))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed_all(SSEDecoder(), chunks) == reference_events(stream)


PLAIN = [
    b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n',
    b'data: {"a": 1}\n\ndata: \n\ndata: {"b": 2}\n\ndata: {"c"',  # an empty event; a tail
    b'data: {"a": 1}\n\n{"error": "bare"}\n',  # a bare JSON line after the events
    b"",
]
NOT_PLAIN = [
    b': keep-alive\n\ndata: {"a": 1}\n\n',
    b'data: {"a": 1}\n\n\ndata: {"b": 2}\n\n',
    b'event: message\ndata: {"a": 1}\n\n',
    b'data: {"a":\ndata: 1}\n\n',
    b'data: {"a": 1}\r\n\r\n',
]


@pytest.mark.parametrize("body", PLAIN)
def test_split_all_gives_the_events_feed_gives_and_where_each_ends(body: bytes) -> None:
    split = SSEDecoder()
    result = split.split_all(body)
    assert result is not None
    payloads, ends = result
    assert payloads + split.close() == feed_all(SSEDecoder(), [body])
    for payload, end in zip(payloads, ends, strict=True):
        # The event is complete at `end`, not a byte before.
        assert payload in feed_all(SSEDecoder(), [body[:end]])
        assert payload not in SSEDecoder().feed(body[: end - 1])


@pytest.mark.parametrize("body", NOT_PLAIN)
def test_split_all_leaves_other_shapes_to_feed(body: bytes) -> None:
    assert SSEDecoder().split_all(body) is None


def test_ndjson_split_all_ends_each_line() -> None:
    body = b'{"a": 1}\n\n{"b": 2}\n{"c"'
    decoder = NDJSONDecoder()
    assert decoder.split_all(body) == ([b'{"a": 1}', b'{"b": 2}'], [9, 19])
    assert decoder.close() == [b'{"c"']
