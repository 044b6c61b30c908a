"""Fixtures of the surfaces suite: one devengine subprocess with its gRPC and HTTP ports, one
in-process SDK worker, the Dapr-service stub, an SDK client and a plain HTTP client.

All workers on one engine share one queue, so the worker registers every workflow this suite
starts (surfaces_workflows.register_all).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from surfaces_support import EngineProcess, Http
from surfaces_workflows import register_all


@pytest.fixture(scope="session")
def surface_engine(tmp_path_factory) -> Iterator[EngineProcess]:
    process = EngineProcess(tmp_path_factory.mktemp("surfaces") / "engine.sqlite3").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def worker(surface_engine) -> Iterator[WorkflowRuntime]:
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(surface_engine.grpc_port))
    register_all(runtime)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.shutdown()


@pytest.fixture(scope="session")
def sdk(surface_engine, worker) -> Iterator[DaprWorkflowClient]:
    client = DaprWorkflowClient(host="127.0.0.1", port=str(surface_engine.grpc_port))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def dapr_stub(surface_engine, worker) -> Iterator[dapr_pb2_grpc.DaprStub]:
    channel = grpc.insecure_channel(surface_engine.address)
    try:
        yield dapr_pb2_grpc.DaprStub(channel)
    finally:
        channel.close()


@pytest.fixture(scope="session")
def http_api(surface_engine, worker) -> Http:
    return Http(surface_engine.http_port)
