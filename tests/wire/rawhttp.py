"""One-connection HTTP/1.1 servers written by hand (a thread on a socket), for wire timing tests."""

from __future__ import annotations

import socket

from llamabatch.config import ModelConfig
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.request import HttpRequest


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of HTTP/1.1 chunked transfer coding."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_request(conn: socket.socket) -> bytes:
    """A whole chat request (head and JSON body) from `conn`."""
    request = b""
    while b"\r\n\r\n" not in request or not request.rstrip().endswith(b"}"):
        request += conn.recv(65536)
    return request


def openai_request(port: int) -> tuple[OpenAIProvider, HttpRequest]:
    """An OpenAI chat request for the server on `port`, and its provider."""
    model = ModelConfig(
        name="m", provider="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1"
    )
    provider = OpenAIProvider()
    return provider, provider.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
