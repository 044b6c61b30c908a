"""Builds and runs the devengine gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3

import grpc

from devengine import protos as p
from devengine.dapr_api import WorkflowApi, add_dapr_workflow_service
from devengine.engine import DEFAULT_MAX_BODY_SIZE, Engine
from devengine.http_api import start_http_server, stop_http_server
from devengine.peers import Courier, add_peer_service
from devengine.retention import RetentionPolicy
from devengine.service import ApiTokenInterceptor, TaskHubService, TracingInterceptor
from devengine.store import Store
from devengine.telemetry import Tracing

log = logging.getLogger("devengine")


def _can_bind(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on, asked before gRPC is: gRPC's core writes a
    line of its own to stderr when it can't, before the one line that says so. (As gRPC does,
    with SO_REUSEADDR: a port a devengine just stopped left in TIME_WAIT is free.) A name
    that does not resolve is gRPC's to report."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return True
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError:
            return False
    return True


async def serve(
    host: str,
    port: int,
    db_path: str,
    api_token: str | None = None,
    app_id: str = "devengine",
    ready: asyncio.Event | None = None,
    http_port: int | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    peers: dict[str, str] | None = None,
    retention: RetentionPolicy | None = None,
) -> None:
    try:
        store = Store(db_path)
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            # The store holds its file exclusively: another devengine runs on it.
            raise SystemExit(f"devengine: {db_path} is in use by another devengine") from None
        raise SystemExit(f"devengine: cannot open {db_path}: {e}") from None
    tracing = Tracing()
    engine = Engine(
        store, app_id=app_id, tracing=tracing, max_body_size=max_body_size, retention=retention
    )
    # Messages are capped as daprd's --max-body-size caps them (-1: gRPC's "no limit").
    max_message = max_body_size if max_body_size > 0 else -1
    # Each interceptor costs every call a coroutine: only install the ones in use.
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if api_token:
        interceptors.append(ApiTokenInterceptor(api_token))
    if tracing.enabled:
        interceptors.append(TracingInterceptor(tracing))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", 0),
            # The Dapr SDKs ping every 30 s, with or without calls in flight (keepalive through
            # load balancers); gRPC's default (one ping in 5 minutes without data) answers
            # them with GOAWAY "too_many_pings", and calls in flight fail with UNAVAILABLE.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ],
    )
    p.grpc_stubs.add_TaskHubSidecarServiceServicer_to_server(TaskHubService(engine), server)
    workflow_api = WorkflowApi(engine)
    add_dapr_workflow_service(workflow_api, server)
    add_peer_service(engine, server)
    courier = Courier(engine, peers or {}, api_token)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address) if _can_bind(host, port) else 0
    except RuntimeError:  # grpc.aio raises where grpc returns 0
        bound = 0
    if bound == 0:
        store.close()
        raise SystemExit(f"devengine: cannot listen on {address} (is the port in use?)")
    http = None
    if http_port is not None:
        # Bound before anything starts: a port in use stops start-up with its one line.
        try:
            http = await start_http_server(
                workflow_api,
                host,
                http_port,
                api_token,
                start_serving=False,
                max_body_size=max_body_size,
            )
        except OSError as e:
            store.close()
            raise SystemExit(f"devengine: cannot listen on {host}:{http_port}: {e}") from None
    await engine.start()
    await server.start()
    courier.start()
    log.info("devengine listening on %s (app id %r, database %s)", address, app_id, db_path)
    if retention is not None:
        log.info("finished workflows are purged after: %s", retention.describe())
    print(f"devengine listening on {address}", flush=True)
    if http is not None:
        await http[0].start_serving()
        log.info("devengine HTTP API on %s:%d", host, http_port)
        print(f"devengine HTTP API listening on {host}:{http_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("devengine stopping")
    if http is not None:
        await stop_http_server(*http)
    await server.stop(grace=2)
    await courier.stop()
    await engine.stop()
    tracing.shutdown()
    store.close()
