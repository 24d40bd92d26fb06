"""A threaded loopback HTTP server for tests (in the spirit of httpx's tests/conftest.py).

    with serve({"/": (200, {"Content-Type": "text/html"}, b"<p>hi</p>"),
                "/echo": lambda req: (200, {}, req.headers.get("user-agent", "").encode())}) as site:
        httpx.get(site.url("/echo"))
        assert site.requests[0].path == "/echo"

A route maps a path (query string ignored) to a static response `(status, headers, body)` or to a
handler `request -> (status, headers, body)`. A body is bytes, or an iterable of bytes sent with
chunked transfer encoding as it is produced (slow trickles, endless bombs), or raw when the reply
declares its own Content-Length (a 100 MB page); a bytes body shorter than a declared
Content-Length is a truncated response. A client that hangs up just ends the generator. Unknown
paths answer 404. Servers bind 127.0.0.1 (or 127.0.0.2, for a
"forbidden" address that still stays on this machine; 127.0.0.3/4 for slow hosts) on a free port.
Given a server-side `ssl.SSLContext`, a server speaks https and records the name each TLS
client asked for (SNI).
"""

from __future__ import annotations

import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Body = bytes | Iterable[bytes]
Reply = tuple[int, Headers, Body]
Route = Reply | Callable[["Request"], Reply]


@dataclass(frozen=True)
class Request:
    """What the server saw of one request."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lowercased
    received_at: float  # time.monotonic()
    client_port: int = 0  # one per TCP connection the client opened


@dataclass
class Server:
    """A running server: its base URL and what it has seen."""

    base_url: str
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    sni: list[str | None] = field(default_factory=list)  # per TLS handshake begun: the name asked for
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _handler_class(routes: Mapping[str, Route], server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path, _, query = self.path.partition("?")
            request = Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()},
                              time.monotonic(), self.client_address[1])
            with server.lock:
                server.requests.append(request)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                route = routes.get(path, (404, {"Content-Type": "text/plain"}, b"not found"))
                self._reply(*(route(request) if callable(route) else route))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client hung up: that is what some tests want
            finally:
                with server.lock:
                    server.in_flight -= 1

        do_HEAD = do_GET  # noqa: N815

        def _reply(self, status: int, headers: Headers, body: Body) -> None:
            self.send_response(status)
            pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
            for name, value in pairs:
                self.send_header(name, value)
            declared = next((int(v) for k, v in pairs if k.lower() == "content-length"), None)
            if isinstance(body, bytes):
                if declared is None:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if declared is not None and declared > len(body):
                    self.close_connection = True  # a truncated body: promise more, then hang up
                return
            if declared is not None:  # an iterable under a declared length: sent raw, not chunked
                self.end_headers()
                for chunk in body:
                    self.wfile.write(chunk)
                self.close_connection = True
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in body:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # keep test output quiet

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # don't wait for a trickling handler whose client already left

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # hung-up clients are expected here


@contextmanager
def serve(routes: Mapping[str, Route], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """Serve `routes` on `host` at a free port until the block ends (over TLS with `tls`)."""
    server = Server("")
    httpd = _QuietServer((host, 0), _handler_class(routes, server))
    if tls is not None:
        tls.sni_callback = lambda _socket, name, _context: server.sni.append(name)
        # The handshake happens in the request's thread, on its first read: a client that
        # refuses the certificate fails that thread only.
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    server.base_url = f"{'https' if tls else 'http'}://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def html(body: str | bytes, status: int = 200, **headers: str) -> Reply:
    """A static HTML reply."""
    data = body.encode() if isinstance(body, str) else body
    return status, {"Content-Type": "text/html; charset=utf-8", **headers}, data


def redirect(location: str, status: int = 302) -> Reply:
    """A static redirect reply."""
    return status, {"Location": location}, b""


def trickling(drips: int, every: float = 0.5) -> Route:
    """A route that answers 200 at once, then sends one byte of body every `every` seconds,
    `drips` times: no single read ever times out, only a whole-response deadline stops it."""
    def route(_: Request) -> Reply:
        def drip() -> Iterator[bytes]:
            yield b"<html><body>"
            for _ in range(drips):
                time.sleep(every)
                yield b" "
        return 200, {"Content-Type": "text/html"}, drip()
    return route


# --- decompression bombs: huge bodies produced lazily, never materialised ---------------------

def zeros_gzip(total: int = 1 << 30) -> Iterator[bytes]:
    """`total` zero bytes gzip-compressed, produced lazily (never materialised)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    for _ in range(total // len(block)):
        yield comp.compress(block)
    yield comp.flush()


def zeros_brotli(total: int = 1 << 30) -> Iterator[bytes]:
    """`total` zero bytes brotli-compressed, produced lazily."""
    comp = brotli.Compressor(quality=5)
    block = bytes(1 << 20)
    for _ in range(total // len(block)):
        yield comp.process(block) + comp.flush()
    yield comp.finish()
