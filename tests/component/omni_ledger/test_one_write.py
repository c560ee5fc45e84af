"""The server's one-write protocol sends, over a real socket, the bytes uvicorn's httptools protocol sends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from omni_ledger.serving import ONE_WRITE_PROTOCOL
from tests.api_stack import free_port

pytestmark = pytest.mark.component


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every shape of response the cycle has: sized, streamed, empty, echoed, failed before and after its start."""
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/json":
        body = b'{"snapshot_id":7,"sku":"CAF\xc3\x89-1"}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":  # no content-length: chunked, the first chunk joined to the headers
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo":
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send(
            {"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"%d" % len(received))]}
        )
        await send({"type": "http.response.body", "body": received})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/boom":  # before its start: uvicorn's 500, and the connection closed
        raise RuntimeError("boom")
    elif path == "/partial":  # the headers and half the body, then the app fails: uvicorn closes
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise RuntimeError("half way")
    elif path == "/unfinished":  # the headers alone, then the app returns: the held headers still go out
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
    elif path == "/oversized":  # a body longer than its content-length: uvicorn raises and closes
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"too long"})
    else:
        body = b"Not Found"
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": body})


class _Served:
    def __init__(self, http: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, http=http, log_level="critical", date_header=False
        )  # no date header: two servers' bytes compared
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def exchange(self, requests: bytes) -> bytes:
        """Send the requests on one connection (pipelined) and read until the server closes it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(requests)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        return received

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[_Served, _Served]]:
    assert ONE_WRITE_PROTOCOL is not None, "httptools is a dependency of the server"
    pair = (_Served("httptools"), _Served(ONE_WRITE_PROTOCOL))
    try:
        yield pair
    finally:
        for each in pair:
            each.stop()


def get(path: str, *, close: bool = False, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: t\r\n{'connection: close' if close else ''}\r\n\r\n".encode()


def post(path: str, body: bytes, *, expect: bool = False) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n"
    return (head + ("expect: 100-continue\r\n" if expect else "") + "\r\n").encode() + body


@pytest.mark.parametrize(
    "requests",
    [
        # One keep-alive connection: sized, streamed, empty, HEAD, a body echoed (and with a
        # 100-continue, written before the response starts, not held), an unknown path.
        get("/json") + get("/stream") + get("/empty") + get("/json", method="HEAD") + post("/echo", b"a body")
        + post("/echo", b"another", expect=True) + get("/nowhere") + get("/json", close=True),
        get("/boom"),
        get("/json") + get("/partial"),
        get("/json") + get("/unfinished"),
        get("/oversized"),
        b"GET /json HTTP/1.0\r\n\r\n",  # HTTP/1.0: no keep-alive, closed after the response
    ],
    ids=["keep-alive", "error-before-start", "error-mid-body", "no-body", "oversized", "http-1.0"],
)  # fmt: skip
def test_a_connection_receives_the_bytes_uvicorns_protocol_sends(
    servers: tuple[_Served, _Served], requests: bytes
) -> None:
    theirs, ours = servers
    expected = theirs.exchange(requests)
    assert expected.startswith(b"HTTP/1.1 ")
    assert ours.exchange(requests) == expected


def test_responses_on_one_connection_each_arrive_whole_before_the_next_request(
    servers: tuple[_Served, _Served],
) -> None:
    """Keep-alive, request by request: nothing is left held once a response's body is written."""
    _, ours = servers
    with socket.create_connection(("127.0.0.1", ours.port), timeout=10) as conn:
        for _ in range(3):
            conn.sendall(get("/json"))
            received = b""
            while not received.endswith(b'"CAF\xc3\x89-1"}'):
                chunk = conn.recv(65536)
                assert chunk, "the server closed a keep-alive connection"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"content-length: 33\r\n" in received
