"""A minimal HTTP/1.1 keep-alive client for load tests on loopback.

httpx spent a whole core at 400 requests/s here (its connection pool scans every connection for every queued
request), so on a 2-core machine the load generator, not the service, set the limit.  This client does only
what the benches need: JSON POST/GET over a fixed pool of persistent connections, responses with a
Content-Length (what uvicorn sends), on uvloop.
"""

from __future__ import annotations

import asyncio


class HttpError(Exception):
    """The connection failed or the response could not be read."""


class Pool:
    def __init__(self, host: str, port: int, size: int):
        self.host, self.port, self.size = host, port, size
        self.idle: asyncio.Queue = asyncio.Queue()
        self.opened = 0

    async def _connection(self):
        if self.idle.empty() and self.opened < self.size:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError as error:
                self.opened -= 1
                raise HttpError(str(error)) from None
        return await self.idle.get()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        reader, writer = await self._connection()
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
                         f"content-length: {len(body)}\r\n\r\n".encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
            writer.close()
            self.opened -= 1
            raise HttpError(str(error)) from None
        self.idle.put_nowait((reader, writer))
        return status, payload

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()
