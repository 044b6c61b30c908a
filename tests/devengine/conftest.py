"""Fixtures of the devengine conformance suite.

The suite talks to the engine only over gRPC, through the Dapr Python SDK and the stubs it ships.
With ENGINE_ADDRESS=host:port it runs against that engine (a real Dapr sidecar, say); otherwise one
devengine subprocess is started for the session. One in-process SDK worker serves the session
engine; tests that kill engines or workers, or need other engine flags, start their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from engine_support import Engine, EngineProcess, WorkerProcess, split_address
from engine_workflows import register_all

EXTERNAL_ADDRESS = os.environ.get("ENGINE_ADDRESS")


@pytest.fixture(scope="session")
def engine_address(tmp_path_factory) -> Iterator[str]:
    if EXTERNAL_ADDRESS:
        yield EXTERNAL_ADDRESS
        return
    process = EngineProcess(tmp_path_factory.mktemp("engine") / "engine.sqlite3").start()
    try:
        yield process.address
    finally:
        process.stop()


@pytest.fixture(scope="session")
def worker(engine_address) -> Iterator[WorkflowRuntime]:
    """The session's SDK worker: registers every test workflow (the engine has one queue)."""
    host, port = split_address(engine_address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.shutdown()


@pytest.fixture(scope="session")
def engine(engine_address, worker) -> Iterator[Engine]:
    """Raw stubs on the session engine, with a worker connected (writes need one)."""
    connection = Engine(engine_address)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def client(engine_address, worker) -> Iterator[DaprWorkflowClient]:
    host, port = split_address(engine_address)
    sdk_client = DaprWorkflowClient(host=host, port=port)
    try:
        yield sdk_client
    finally:
        sdk_client.close()


@pytest.fixture
def own_engine(tmp_path) -> Iterator[EngineProcess]:
    """A devengine of the test's own on a fresh file (no worker): stopped at the end."""
    if EXTERNAL_ADDRESS:
        pytest.skip("starts its own devengine process (ENGINE_ADDRESS is set)")
    process = EngineProcess(tmp_path / "own.sqlite3")
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def worker_processes(tmp_path) -> Iterator[list[WorkerProcess]]:
    """Collects worker subprocesses a test starts, and kills the leftovers."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()
