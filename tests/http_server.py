"""A loopback HTTP server that serves one payload and misbehaves on demand, for download tests.

    with FaultyServer(payload) as server:
        server.fault = Fault(cut_after=1000, cut_times=1)   # drop the first connection
        download(config.replace(source=server.url))
        assert server.requests[1].range == "bytes=1000-"

Each answer closes its connection, so every request the client makes is a new one and shows up
in `server.requests` (method, path, Range and Accept-Encoding headers, status sent).
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
from dataclasses import dataclass, field

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>naver_shopping.txt</title></head>"
    b"<body><p>Sign in to view this file.</p></body></html>\n"
)
_RANGE = re.compile(r"^\s*bytes=(\d+)-\s*$")


@dataclass
class Fault:
    """How the server misbehaves; the defaults serve the payload faithfully, honouring Range."""

    fail_first: int = 0  # answer HTTP 500 to the first K requests
    fail_every: int = 0  # answer HTTP 500 to every Nth request: the 1st, the N+1th, ...
    status: int | None = None  # answer every request with this status and a short text body
    cut_after: int | None = None  # send the full Content-Length, then only this many bytes, close
    cut_times: int | None = None  # how many answers are cut short (None: every one)
    delay: float = 0.0  # seconds to stall before headers, then hang up without answering
    delay_after: int | None = None  # stall after this many body bytes instead, then go on
    delay_times: int | None = None  # how many answers stall (None: every one)
    corrupt: bool = False  # serve the payload with some bytes changed
    range_mode: str = "honour"  # honour (206) | ignore (200, whole body) | wrong (206 from 0)
    html: bool = False  # serve a web page as text/html instead of the payload
    body: bytes | None = None  # serve these bytes (as text/plain) instead of the payload


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    accept_encoding: str | None
    status: int | None = None


@dataclass
class FaultyServer:
    payload: bytes
    fault: Fault = field(default_factory=Fault)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._cuts = self._delays = 0
        owner = self

        class Handler(_FaultyHandler):
            server_owner = owner

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sentiment/naver_shopping.txt"

    def start(self) -> FaultyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes any handler stalled in a delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def ranges(self) -> list[str | None]:
        with self._lock:
            return [r.range for r in self.requests]

    # -- called from handler threads --------------------------------------------------------------
    def _record(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
            return len(self.requests) - 1

    def _take(self, kind: str, times: int | None) -> bool:
        """Whether this answer gets the fault `kind` (cut or delay), counting it if so."""
        with self._lock:
            done = getattr(self, f"_{kind}")
            if times is not None and done >= times:
                return False
            setattr(self, f"_{kind}", done + 1)
            return True

    def _body(self) -> bytes:
        if not self.fault.corrupt:
            return self.payload
        middle = len(self.payload) // 2
        flipped = bytes(b ^ 0x20 for b in self.payload[middle : middle + 64])
        return self.payload[:middle] + flipped + self.payload[middle + 64 :]


class _FaultyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: FaultyServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner, fault = self.server_owner, self.server_owner.fault
        self.close_connection = True
        request = Request(
            self.command, self.path, self.headers.get("Range"), self.headers.get("Accept-Encoding")
        )
        index = owner._record(request)

        delaying = fault.delay > 0 and owner._take("delays", fault.delay_times)
        if delaying and fault.delay_after is None:
            owner._stopping.wait(fault.delay)
            return  # a hung server: no answer at all, then the connection closes
        if index < fault.fail_first or (fault.fail_every and index % fault.fail_every == 0):
            return self._simple(request, 500, b"internal server error\n", send_body)
        if fault.status is not None:
            reason = b"404: Not Found\n" if fault.status == 404 else b"error\n"
            return self._simple(request, fault.status, reason, send_body)
        if fault.html:
            return self._simple(request, 200, HTML_PAGE, send_body, "text/html; charset=utf-8")
        if fault.body is not None:
            return self._simple(request, 200, fault.body, send_body)

        body = owner._body()
        status, headers = 200, {}
        match = _RANGE.match(request.range or "")
        if match and fault.range_mode != "ignore":
            first = int(match.group(1))
            if first >= len(body):
                headers["Content-Range"] = f"bytes */{len(body)}"
                return self._simple(request, 416, b"", send_body, extra=headers)
            if fault.range_mode == "wrong":
                first = 0  # a broken server: 206, but not from the byte asked for
            status = 206
            headers["Content-Range"] = f"bytes {first}-{len(body) - 1}/{len(body)}"
            body = body[first:]
        headers["Accept-Ranges"] = "bytes"

        request.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if not send_body:
            return
        if fault.cut_after is not None and owner._take("cuts", fault.cut_times):
            body = body[: fault.cut_after]  # Content-Length promised more: the client sees a cut
        try:
            if delaying and fault.delay_after is not None:
                self.wfile.write(body[: fault.delay_after])
                self.wfile.flush()
                if owner._stopping.wait(fault.delay):
                    return
                body = body[fault.delay_after :]
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client gave up on us (a read timeout): nothing to do
            pass

    def _simple(
        self,
        request: Request,
        status: int,
        body: bytes,
        send_body: bool,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict | None = None,
    ) -> None:
        request.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            try:
                self.wfile.write(body)
            except OSError:
                pass


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
