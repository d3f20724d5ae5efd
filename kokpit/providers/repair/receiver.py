"""A tiny HTTPS server on loopback, for tests and the demo: it receives webhooks and serves
files.

It stands for a ticket system or a chat hook (:mod:`kokpit.providers.repair.webhook` POSTs to
it) and for the web server an installer image is fetched from (the Redfish emulator downloads
what virtual media is given). It records every request (method, path, headers, body) and
answers POSTs with what a test set for the path (:meth:`WebhookReceiver.reply`), by default
``200`` and ``{"id": "TICKET-<n>", "url": ".../tickets/<n>"}``; GET serves :attr:`files`.
TLS comes from a :class:`~kokpit.providers.repair.emulator.LocalCA`, or is off
(``tls=False``) to show a plain-HTTP endpoint refused. It runs in a thread of this process.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kokpit.providers.repair.emulator import LISTEN_ADDRESS, LocalCA

#: Bodies larger than this are refused (413) and not recorded.
BODY_MAX = 1024 * 1024


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class WebhookReceiver:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`received` lists requests."""

    directory: Path
    ca: LocalCA | None = None
    tls: bool = True
    #: GET ``path`` → body.
    files: dict[str, bytes] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _replies: dict[str, _Reply] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.tls and self.ca is None:
            self.ca = LocalCA.create("kokpit test webhook CA")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return self._server.server_address[1]

    def url(self, path: str = "/hooks/kokpit") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LISTEN_ADDRESS}:{self.port}{path}"

    def reply(
        self, path: str, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        """Answer POSTs to ``path`` with ``status`` and ``body`` from now on."""
        self._replies[path] = _Reply(status, body, content_type)

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # tests look at `received`

            def do_GET(self) -> None:
                body = receiver.files.get(self.path)
                receiver._record(self, b"")
                if body is None:
                    self._answer(404, b"not found\n", "text/plain")
                else:
                    self._answer(200, body, "application/octet-stream")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > BODY_MAX:
                    self._answer(413, b"too large\n", "text/plain")
                    return
                body = self.rfile.read(length)
                count = receiver._record(self, body)
                reply = receiver._replies.get(self.path) or _Reply(
                    200,
                    json.dumps(
                        {"id": f"TICKET-{count}", "url": receiver.url(f"/tickets/{count}")}
                    ).encode(),
                )
                self._answer(reply.status, reply.body, reply.content_type)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer((LISTEN_ADDRESS, 0), Handler)
        server.daemon_threads = True
        if self.tls and self.ca is not None:
            cert, key = self.ca.issue_server(self.directory / "receiver-tls")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> int:
        with self._lock:
            self.received.append(
                Received(handler.command, handler.path, dict(handler.headers.items()), body)
            )
            return len(self.received)
