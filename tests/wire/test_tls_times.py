"""Wire times over HTTPS: TLS's own records are not the reply."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import aiohttp.connector
import pytest

from llamabatch.config import ModelConfig
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.transport import Transport
from tests.wire.rawhttp import read_request

THINK_S = 0.2  # the server's time before its reply's first byte


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    pem = tmp_path_factory.mktemp("tls") / "localhost.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(pem), "-out", str(pem)),
        ],
        check=True,
        capture_output=True,
    )
    return pem


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def thinking_server(listener: socket.socket, context: ssl.SSLContext) -> None:
    """One TLS 1.3 connection (session tickets follow the handshake); the reply after THINK_S."""
    raw, _ = listener.accept()
    with context.wrap_socket(raw, server_side=True) as conn:
        read_request(conn)
        time.sleep(THINK_S)
        events = (
            b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        )
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk(events) + b"0\r\n\r\n"
        )
        conn.recv(1)


@pytest.mark.anyio
async def test_ttfb_over_a_new_tls_connection_is_the_replys_not_a_session_tickets(
    certificate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS 1.3 servers send session tickets right after the handshake: the first read after
    # the request is written is a ticket, not the reply, and must not time the reply.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate)
    trusting = ssl.create_default_context(cafile=str(certificate))
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", trusting)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(
            target=thinking_server, args=(listener, server_context), daemon=True
        )
        server.start()
        port = listener.getsockname()[1]
        model = ModelConfig(
            name="m", provider="openai", model="m", base_url=f"https://localhost:{port}/v1"
        )
        provider = OpenAIProvider()
        request = provider.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
        resp = Response()
        async with Transport() as transport:
            await transport.send(request, provider, resp, 10.0)
        server.join(5)
    assert resp.text == "hi"
    assert resp.first_byte_t is not None and resp.first_token_t is not None
    # The server read the whole request before it waited: no byte of the reply came sooner.
    assert resp.first_byte_t - resp.started_t >= THINK_S * 0.95
    # The head and the token came in one read: one time (each converted on its own).
    assert resp.first_byte_t <= resp.first_token_t + 0.001
