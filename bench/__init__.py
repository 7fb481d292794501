"""Benchmarks (issue 8, in progress): figures beside their anchors, measured in the same run.

Done so far: event-store appends against a bare sqlite3 loop (the ceiling) and the
``eventsourcing`` library (the peer), and replay of a large log (``bench/store.py``). Still to
come before ``make bench`` exists: relay and consumer against bare kafka-python loops, HTTP
against hello-world Flask under the same gunicorn settings, end-to-end propagation, rankings at
scale, and the README table.
"""
