"""Benchmarks: ``make bench`` (``python -m bench``), every figure beside its anchor measured in the
same run, written to ``bench/results/latest.json`` and ``latest.md``.

- :mod:`bench.store` — event-store appends against a bare ``sqlite3`` loop (the ceiling) and the
  ``eventsourcing`` library (the peer); replay of a large log into a read model;
- :mod:`bench.ranking` — rankings at 10,000 subjects and 1,000,000 ratings;
- :mod:`bench.pipeline` — relay and consumer against bare kafka-python loops;
- :mod:`bench.http` with :mod:`bench.load` and :mod:`bench.platform` — writes, reads and a
  composed gateway view against hello-world Flask under the same gunicorn settings;
- :mod:`bench.propagation` — command to effect across services at 100 commands/s.

The scenario drivers of the tests (``tests/support``) set the benchmarks' data up through the
services' APIs, so the benchmarks run from a checkout (``python -m bench`` from its root).
"""
