"""Benchmarks: ``make bench`` (``python -m bench``), every figure beside its anchor measured in the
same run, written to ``bench/results/latest.json`` and ``latest.md``.

- :mod:`bench.store` — event-store appends against a bare ``sqlite3`` loop on our own table (the
  ceiling) and the ``eventsourcing`` library (the peer, with an id and a serialised payload per
  event, as ours); replay of a large log into a read model;
- :mod:`bench.ranking` — rankings at 10,000 subjects and 1,000,000 ratings;
- :mod:`bench.pipeline` — relay and consumer against bare kafka-python loops;
- :mod:`bench.http` with :mod:`bench.load`, :mod:`bench.platform` and :mod:`bench.anchors` — writes
  against an ``eventsourcing`` command per request (the write anchor), reads against hello-world
  Flask, the gateway's composed view against a hello-world gateway over three hello-world services
  (the composed anchor), all under the product's gunicorn settings and worker classes;
  :mod:`bench.profile_http` prints where a write's and a composed view's time goes, per layer;
- :mod:`bench.propagation` — command to effect across services at 100 commands/s.

The scenario drivers of the tests (``tests/support``) set the benchmarks' data up through the
services' APIs, so the benchmarks run from a checkout (``python -m bench`` from its root).
"""
