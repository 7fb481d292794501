"""The hello-world anchors, served by the same gunicorn settings as ours.

- ``bench.hello:app``: the smallest Flask app, ``GET /hello`` (the anchor of plain reads, and each
  of the composed anchor's three services, with sync workers like our services);
- ``bench.hello:composed_app()``: a hello-world gateway, ``GET /hello`` calls the three hello-world
  services named by ``BENCH_HELLO_UPSTREAMS`` (comma-separated base URLs) concurrently and merges
  their JSON. It fetches as our gateway does (``gateway/upstream.py``, ``gateway/compose.py``),
  without its code: one ``urllib3.PoolManager`` per service (``num_pools=2, maxsize=10,
  block=False, retries=False``), a total timeout of 2 s per call (``upstream_timeout_seconds``),
  the calls submitted to a ``ThreadPoolExecutor(max_workers=16)`` — under gunicorn's gevent worker
  (``GUNICORN_WORKER_CLASS=gevent``, as ``make run`` serves the gateway) threads are greenlets.

The write anchor (one eventsourcing command per request) is :mod:`bench.anchors`.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    return {"hello": "world"}


UPSTREAM_TIMEOUT_S = 2.0


def composed_app() -> Flask:
    """The hello-world gateway, for ``gunicorn 'bench.hello:composed_app()'`` (gevent workers)."""
    import json
    import os
    from concurrent.futures import ThreadPoolExecutor

    import urllib3

    names = ("a", "b", "c")
    urls = [url.rstrip("/") for url in os.environ["BENCH_HELLO_UPSTREAMS"].split(",")]
    if len(urls) != len(names):
        raise RuntimeError(f"BENCH_HELLO_UPSTREAMS: expected {len(names)} URLs, got {urls}")
    upstreams = {name: (url, urllib3.PoolManager(num_pools=2, maxsize=10, block=False, retries=False))
                 for name, url in zip(names, urls)}
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="compose")
    front = Flask("hello-gateway")

    def fetch(name: str):
        url, pool = upstreams[name]
        reply = pool.request("GET", url + "/hello", headers={"Accept": "application/json"},
                             timeout=urllib3.Timeout(total=UPSTREAM_TIMEOUT_S), redirect=False, preload_content=True)
        if reply.status != 200:
            raise RuntimeError(f"{name} answered {reply.status}")
        return json.loads(reply.data)

    @front.get("/hello")
    def composed():
        futures = {name: executor.submit(fetch, name) for name in names}
        return {name: future.result() for name, future in futures.items()}

    return front
