"""A loopback TCP proxy in front of the API server that tests can cut, like a flaky network.

TLS passes through untouched (the API server's certificate is valid for 127.0.0.1), so the
client under test talks to the real API server; only the connection between them is ours.
"""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        #: Connections accepted so far (refused ones included): what a client attempted.
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._open = True

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Let every connection handler see its cut and its transports finish closing (an
        # aborted transport closes on a later loop turn): none is left to the garbage collector.
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await asyncio.sleep(0)

    def cut(self) -> None:
        """Drop every open connection mid-stream."""
        self.cuts += 1
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def block(self) -> None:
        """Cut, and refuse new connections until :meth:`unblock`."""
        self._open = False
        self.cut()

    def unblock(self) -> None:
        self._open = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        self.connections += 1
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)
