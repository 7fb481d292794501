"""The one HTTP load generator every HTTP figure is measured with (ours and the hello-world anchor).

Requests are prepared before the clock starts (method, path, body, headers) and shared out among
``concurrency`` worker processes (forked, so the generator is not bound to one core by the GIL),
each with its own keep-alive ``http.client`` connection (gunicorn's sync workers close it after
each response; it is then reopened, as any client's would be).

- :func:`closed_loop`: each worker sends its next request as soon as the previous answer is in:
  the peak rate.
- :func:`open_loop`: requests are sent on a fixed schedule at ``rate`` per second in total;
  latency is measured from the *scheduled* time, so a server that falls behind is charged for
  the queue it builds (no coordinated omission).

Any answer other than 2xx is counted as an error; figures are computed over successful requests.
"""

from __future__ import annotations

import http.client
import multiprocessing
import time
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Result:
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _worker(base_url: str, requests: list[Request], duration: float, interval: float | None, offset: float,
            start_at: float, queue) -> None:
    parts = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    latencies, ok, errors, first_error = [], 0, 0, ""
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    for i, request in enumerate(requests):
        scheduled = began + offset + i * interval if interval else time.perf_counter()
        if scheduled - began > duration:
            break
        now = time.perf_counter()
        if now - began > duration:
            break
        if scheduled > now:
            time.sleep(scheduled - now)
        headers = dict(request.headers)
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(request.method, request.path, body=request.body, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
            status = reply.status
            if reply.will_close:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            status, body = 0, repr(exc).encode()
        done = time.perf_counter()
        if 200 <= status < 300:
            ok += 1
            latencies.append((done - scheduled) * 1000)
        else:
            errors += 1
            if not first_error:
                first_error = f"{request.method} {request.path} -> {status}: {body[:300]!r}"
    queue.put((ok, errors, time.perf_counter() - began, latencies, first_error))


def _run(base_url: str, requests: list[Request], concurrency: int, duration: float,
         rate: float | None) -> Result:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    interval = concurrency / rate if rate else None
    start_at = time.time() + 0.3
    workers = [context.Process(target=_worker, args=(base_url, requests[k::concurrency], duration, interval,
                                                     (k / rate) if rate else 0.0, start_at, queue))
               for k in range(concurrency)]
    for worker in workers:
        worker.start()
    parts = [queue.get(timeout=duration + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = [value for part in parts for value in part[3]]
    return Result(ok=sum(p[0] for p in parts), errors=sum(p[1] for p in parts),
                  seconds=max(p[2] for p in parts), latencies_ms=latencies,
                  first_error=next((p[4] for p in parts if p[4]), ""))


def closed_loop(base_url: str, requests: list[Request], *, concurrency: int, duration: float) -> Result:
    return _run(base_url, requests, concurrency, duration, None)


def open_loop(base_url: str, requests: list[Request], *, rate: float, concurrency: int, duration: float) -> Result:
    return _run(base_url, requests, concurrency, duration, rate)
