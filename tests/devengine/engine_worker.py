"""An SDK worker in its own process, for tests that kill workers or engines.

    python engine_worker.py HOST:PORT

Registers every test workflow and activity and runs until killed or sent SIGTERM.
"""

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dapr.ext.workflow import WorkflowRuntime  # noqa: E402
from engine_workflows import register_all  # noqa: E402


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    print("worker ready", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    runtime.shutdown()


if __name__ == "__main__":
    main()
