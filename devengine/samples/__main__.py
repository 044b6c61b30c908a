"""Command line: ``python -m devengine.samples --engine HOST:PORT [--billing HOST:PORT]``.

Waits for the engine to accept connections, starts the SDK worker, then the load generator, and
runs until SIGINT or SIGTERM. With ``--billing``, the shop runs as two apps: billing's workflows
and activities on a worker of their own connected to that engine (which must serve the app id
"billing" and have the other engine as its peer), the rest on ``--engine``'s, and confirmed
orders are invoiced on billing. Without it, everything runs on ``--engine``.

On a signal it stops starting work, lets in-flight calls finish, stops the workers and exits 0.
A second signal exits at once, and so does a stop that takes over 50 s (exit status 1).

Run one samples process per engine (or pair of engines): instance ids are numbered per day from
what the engines hold at start-up, and two generators would hand out the same ids (starting an
id whose instance has finished replaces it). ``--app-id`` only names the app in log lines; what
the engine records as the app id is the engine's own ``--app-id``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import random
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime

log = logging.getLogger("devengine.samples")

# Loggers the Dapr SDK writes to. They have no level of their own, so without this they would
# inherit the root logger's.
SDK_LOGGERS = (
    "WorkflowRuntime",
    "DaprWorkflowClient",
    "DaprWorkflowContext",
    "durabletask-worker",
    "durabletask-client",
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A deadline for every unary call the SDK makes (PROTOCOL: writes can block without a worker).
CALL_TIMEOUT_SECONDS = 30
ENGINE_WAIT_LOG_EVERY = 10.0
DRAIN_SECONDS = 5.0
# The load generator's last call, the drain and the worker's shutdown, with room to spare.
STOP_DEADLINE_SECONDS = CALL_TIMEOUT_SECONDS + 20
WORKER_THREADS = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devengine.samples",
        description="Run the sample workflow worker and a load generator against an engine.",
    )
    parser.add_argument(
        "--engine",
        default="127.0.0.1:50001",
        metavar="HOST:PORT",
        help="the engine's (or Dapr sidecar's) gRPC address (default %(default)s)",
    )
    parser.add_argument(
        "--billing",
        metavar="HOST:PORT",
        help="the billing app's engine: run billing's workflows there, and the rest on --engine "
        "(default: all on --engine)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2.0,
        metavar="N",
        help="workflows started per second; 0 runs the worker only (default %(default)s)",
    )
    parser.add_argument(
        "--app-id",
        default="furniture-shop",
        help="the app's name in log lines; the engine's own --app-id decides "
        "what the engine records (default %(default)s)",
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("DAPR_API_TOKEN"),
        help="sent as dapr-api-token when the engine requires one (default: $DAPR_API_TOKEN)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for the generator's choices, for a repeatable run",
    )
    parser.add_argument(
        "--no-monitors", action="store_true", help="do not run the payment-gateway monitors"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="level of the samples' own log lines (default %(default)s)",
    )
    parser.add_argument(
        "--sdk-log-level",
        default="WARNING",
        help="level of the Dapr SDK's log lines; INFO logs every workflow turn "
        "(default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    try:
        args.host, args.port = split_engine(args.engine)
        args.billing_host, args.billing_port = (
            split_engine(args.billing, "--billing") if args.billing else (None, None)
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.billing and (args.billing_host, args.billing_port) == (args.host, args.port):
        # Two workers on one engine would take each other's work items and fail them.
        parser.error("--billing names the engine of --engine: leave it out to run one app")
    return args


def split_engine(address: str, option: str = "--engine") -> tuple[str, int]:
    """'host:port' (or '[v6]:port') -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{option} must be HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


def configure_logging(app_id: str, level: str, sdk_level: str) -> logging.Handler:
    """Own handler for our lines and one for the SDK's, both on stderr.

    Separate handlers because the SDK sets the level of the handler it is given, which would
    silence our INFO lines; no root handler, so nothing is printed twice.
    """
    ours = logging.StreamHandler(sys.stderr)
    ours.setFormatter(logging.Formatter(LOG_FORMAT.replace("%(name)s", f"{app_id} %(name)s")))
    log.addHandler(ours)
    log.setLevel(level.upper())
    log.propagate = False

    sdk = logging.StreamHandler(sys.stderr)
    sdk.setFormatter(logging.Formatter(LOG_FORMAT))
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(sdk_level.upper())
    return sdk


def wait_for_engine(host: str, port: int, stop: threading.Event) -> bool:
    """Block until the engine accepts gRPC connections; False if stopped first.

    ``make run`` starts the engine and the samples together, and the SDK worker gives up after
    30 s if its first connection fails.
    """
    import grpc

    target = f"{host}:{port}"
    waited = 0.0
    while not stop.is_set():
        channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
            return True
        except grpc.FutureTimeoutError:
            waited += 1.0
            if waited % ENGINE_WAIT_LOG_EVERY == 1.0:
                log.info("waiting for the engine at %s", target)
        finally:
            channel.close()
    return False


def _stop_took_too_long() -> None:
    log.warning("not stopped within %d s: exiting without cleaning up", STOP_DEADLINE_SECONDS)
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sdk_handler = configure_logging(args.app_id, args.log_level, args.sdk_log_level)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without cleaning up", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()
        # The clean stop waits on the SDK, which can wait for ever on an engine that died at the
        # same moment (a launcher killed outright stops both at once): don't outlive it for long.
        watchdog = threading.Timer(STOP_DEADLINE_SECONDS, _stop_took_too_long)
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # Imported after the signal handlers: importing the SDK takes a moment, and a Ctrl-C during
    # it should still stop cleanly.
    from dapr.conf import settings
    from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
    from dapr.ext.workflow.logger import LoggerOptions

    from . import workflows

    if args.api_token:
        settings.DAPR_API_TOKEN = args.api_token
    if not os.environ.get("DAPR_API_TIMEOUT_SECONDS"):
        settings.DAPR_API_TIMEOUT_SECONDS = CALL_TIMEOUT_SECONDS

    # (address, host, port, app) of every worker: one app, or orders and billing.
    workers = [(args.engine, args.host, args.port, workflows.SHOP)]
    if args.billing:
        workers = [
            (args.engine, args.host, args.port, workflows.ORDERS),
            (args.billing, args.billing_host, args.billing_port, workflows.BILLING),
        ]
    for _, host, port, _ in workers:
        if not wait_for_engine(host, port, stop):
            return 0

    sdk_options = LoggerOptions(
        log_level=args.sdk_log_level.upper(),
        log_handler=sdk_handler,
        log_formatter=sdk_handler.formatter,
    )
    in_flight = workflows.ActivitiesInFlight()
    runtimes: list[WorkflowRuntime] = []
    try:
        for address, host, port, app in workers:
            runtime = WorkflowRuntime(
                host=host,
                port=str(port),
                logger_options=sdk_options,
                # The activities mostly wait (simulated remote calls): the SDK's default of
                # CPUs + 4 threads would queue them at a few workflows per second.
                maximum_thread_pool_workers=WORKER_THREADS,
            )
            workflows.register(runtime, in_flight, app)
            runtimes.append(runtime)
            try:
                start_worker(runtime, stop)
            except Exception as exc:  # noqa: BLE001 - report and exit, the SDK logged details
                if stop.is_set():
                    log.info("stopped before the worker connected")
                    return 0
                log.error("the workflow worker could not connect to %s: %s", address, exc)
                return 1
            log.info(
                "worker connected to %s with %d workflows and %d activities",
                address,
                len(app.workflows),
                len(app.activities),
            )
        clients = [
            DaprWorkflowClient(host=host, port=str(port), logger_options=sdk_options)
            for _, host, port, _ in workers
        ]
        try:
            run_generator(args, stop, clients)
        finally:
            for client in clients:
                client.close()
        # Let running activities report before the workers disconnect. Workflows go on (timers,
        # children) and the engine keeps sending work, so this is a best effort, not a drain.
        if not in_flight.wait_idle(DRAIN_SECONDS):
            log.info("stopping with activities still running; the engine will re-dispatch them")
    finally:
        # A workflow turn in flight when its worker stops is dropped, and the engine sends it
        # again to the next worker; asyncio would report each one's task as destroyed while
        # pending, bare lines on the terminal of make run that look like a failure.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        sys.unraisablehook = quiet_when_the_workers_loop_closed
        for runtime in runtimes:
            runtime.shutdown()
    log.info("stopped")
    return 0


def quiet_when_the_workers_loop_closed(unraisable: sys.UnraisableHookArgs) -> None:
    """Drops what Python reports of a worker's coroutine collected after the SDK closed the
    worker's event loop (its wait for the next work item, cancelled too late): a traceback on
    the terminal of a clean stop. Anything else is reported as it would be."""
    error = unraisable.exc_value
    if (
        isinstance(error, RuntimeError)
        and str(error) == "Event loop is closed"
        and inspect.iscoroutine(unraisable.object)
    ):
        return
    sys.__unraisablehook__(unraisable)


def start_worker(runtime: WorkflowRuntime, stop: threading.Event) -> None:
    """Connect the worker to its engine; raises what the SDK raises when it cannot."""
    start_returned = threading.Event()

    def stop_while_connecting() -> None:
        # start() waits for the engine's work-item stream until the worker is shut down: an
        # engine stopped at the same moment as this process would keep it waiting for ever. A
        # shutdown before start() has made its thread does nothing, so it is asked again.
        stop.wait()
        while not start_returned.wait(0.5):
            runtime.shutdown()

    threading.Thread(
        target=stop_while_connecting, name="stop-while-connecting", daemon=True
    ).start()
    try:
        runtime.start()
    finally:
        start_returned.set()


def run_generator(
    args: argparse.Namespace, stop: threading.Event, clients: list[DaprWorkflowClient]
) -> None:
    """Generate load until ``stop`` is set; ``clients``: the engine's, then billing's if apart."""
    from .generator import LoadGenerator

    generator = LoadGenerator(
        clients[0],
        billing=clients[1] if len(clients) > 1 else None,
        rate=args.rate,
        stop=stop,
        rng=random.Random(args.seed),
        monitors=not args.no_monitors,
    )
    thread = threading.Thread(target=generator.run, name="load-generator", daemon=True)
    thread.start()
    log.info("generating load: %s workflow(s) per second", f"{args.rate:g}")
    # A timed wait so the main thread wakes for signals on every platform.
    while not stop.wait(1.0):
        if not thread.is_alive():
            log.error("the load generator stopped unexpectedly")
            stop.set()
    thread.join(timeout=CALL_TIMEOUT_SECONDS + 5)


if __name__ == "__main__":
    sys.exit(main())
