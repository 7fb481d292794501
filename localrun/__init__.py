"""The local platform under supervisord (``make run`` → ``bin/run-platform`` → ``python -m localrun``).

Every process of the Procfile runs under supervisord in the foreground: one that dies is restarted
(after a pause that grows with each quick failure), one that keeps failing is given up on and
reported with the end of its log, and the others keep running. The launcher checks every port
first, says when every app and worker answers ``/readyz`` and where, and on Ctrl-C stops
everything. For local use only: the container image runs one process per container.
"""
