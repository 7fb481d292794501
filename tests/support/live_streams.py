"""Many live streams (``GET /api/v1/live``, server-sent events) from one process: asyncio
connections, not a thread each. Used by the end-to-end test of streams at scale and by the
benchmark (``bench/live.py``).

Each :class:`LiveReader` speaks HTTP/1.0 over a raw asyncio connection (so the body is the event
stream itself, not chunked), parses the SSE lines as ``EventSource`` does, keeps the events it
received and notes each ``: caught-up``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping


class LiveReader:
    def __init__(self, host: str, port: int, path: str = "/api/v1/live", headers: Mapping[str, str] | None = None,
                 label: str = "") -> None:
        self.host, self.port, self.path = host, port, path
        self.headers = dict(headers or {})
        self.label = label
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.body = b""  # of an answer other than 200
        self.events: list[dict[str, str]] = []  # {"id", "event", "data"} as sent
        self.received_at: list[float] = []  # time.monotonic() when each event was parsed
        self.caught_up = asyncio.Event()
        self.keep_alives = 0
        self.ended = False
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None

    async def open(self, timeout: float = 30.0) -> int:
        """Connect, send the request and read the answer's head; a 200's events are then read in
        the background. The status."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self._writer = writer
        head = [f"GET {self.path} HTTP/1.0", f"Host: {self.host}:{self.port}", "Accept: text/event-stream"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        self.status = int(status_line.split()[1])
        while True:
            line = (await asyncio.wait_for(reader.readline(), timeout)).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            self.response_headers[name.strip().lower()] = value.strip()
        if self.status != 200:
            self.body = await asyncio.wait_for(reader.read(), timeout)
            self.ended = True
            writer.close()
            return self.status
        self._task = asyncio.create_task(self._read(reader))
        return self.status

    def error(self) -> dict:
        return json.loads(self.body) if self.body else {}

    async def _read(self, reader: asyncio.StreamReader) -> None:
        current: dict[str, str] = {}
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if "data" in current:
                        self.events.append(current)
                        self.received_at.append(time.monotonic())
                    current = {}
                elif line.startswith(":"):
                    if line.startswith(": caught-up"):
                        self.caught_up.set()
                    elif line.startswith(": keep-alive"):
                        self.keep_alives += 1
                else:
                    key, _, value = line.partition(":")
                    current[key] = value[1:] if value.startswith(" ") else value
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.ended = True

    def data(self) -> list[dict]:
        return [json.loads(event["data"]) for event in self.events]

    def has(self, needle: str) -> bool:
        """Whether some event's data holds ``needle`` (an id, say)."""
        return any(needle in event["data"] for event in self.events)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def open_all(readers: Iterable[LiveReader], batch: int = 50, timeout: float = 60.0) -> None:
    """Open the readers, ``batch`` at a time, and wait until every 200 among them is caught up."""
    readers = list(readers)
    for start in range(0, len(readers), batch):
        await asyncio.gather(*(r.open(timeout) for r in readers[start:start + batch]))
    opened = [r for r in readers if r.status == 200]
    await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in opened)), timeout)


async def close_all(readers: Iterable[LiveReader]) -> None:
    await asyncio.gather(*(r.close() for r in readers))


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Wait (without blocking the loop) until ``condition()``; the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - began
