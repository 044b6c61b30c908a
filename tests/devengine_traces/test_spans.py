"""devengine's spans, checked with an OTLP receiver the test runs on 127.0.0.1.

A real devengine process exports to the receiver; a real SDK worker runs the workflow; the
workflow is started with a traceparent of the test's own, so every span must land in that trace.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime, when_all
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from google.protobuf import empty_pb2, wrappers_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it, with its service name."""

    def __init__(self):
        self.spans: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.spans):
                    return list(self.spans)
            time.sleep(0.1)
        with self.lock:
            names = sorted(s.name for _, s in self.spans)
        raise AssertionError(f"spans never matched; got {names}")


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


@pytest.fixture
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collector = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    collector.endpoint = f"http://127.0.0.1:{port}"
    yield collector
    server.stop(0)


@pytest.fixture
def traced_engine(tmp_path, receiver):
    port = free_port()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log = open(tmp_path / "engine.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "devengine", "--port", str(port), "--db", str(tmp_path / "e.db")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = stubs.TaskHubSidecarServiceStub(channel)
        stub.Hello(empty_pb2.Empty(), timeout=10)
        yield port, stub
    finally:
        channel.close()
        process.terminate()  # a clean stop flushes the span exporter
        process.wait(timeout=20)
        log.close()


def test_spans_follow_daprd_names_and_sit_in_the_callers_trace(traced_engine, receiver):
    port, stub = traced_engine
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(port))

    @runtime.activity(name="charge_card")
    def charge_card(ctx, order):
        return {"charged": order["total"]}

    @runtime.activity(name="book_courier")
    def book_courier(ctx, order):
        return {"courier": "north-express"}

    @runtime.workflow(name="ship_order")
    def ship_order(ctx, order):
        yield ctx.create_timer(timedelta(milliseconds=200))
        results = yield when_all(
            [
                ctx.call_activity(charge_card, input=order),
                ctx.call_activity(book_courier, input=order),
            ]
        )
        return results

    runtime.start()
    try:
        stub.StartInstance(
            pb.CreateInstanceRequest(
                instanceId="order-7731",
                name="ship_order",
                input=wrappers_pb2.StringValue(value='{"total": 129.5}'),
            ),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=15,
        )
        state = DaprWorkflowClient(host="127.0.0.1", port=str(port)).wait_for_workflow_completion(
            "order-7731", timeout_in_seconds=30
        )
        assert state.runtime_status.name == "COMPLETED"
    finally:
        runtime.shutdown()

    spans = receiver.wait_for(
        lambda got: (
            any(s.name == "orchestration||ship_order" for _, s in got)
            and sum(s.name.startswith("activity||") for _, s in got) == 2
        )
    )
    ours = {s.name: s for service, s in spans if service == "devengine"}
    workflow_spans = {
        "/TaskHubSidecarService/StartInstance",
        "create_orchestration||ship_order",
        "orchestration||ship_order",
        "timer",
        "activity||charge_card",
        "activity||book_courier",
    }
    for name in workflow_spans:
        assert ours[name].trace_id.hex() == TRACE_ID, name

    server = ours["/TaskHubSidecarService/StartInstance"]
    create = ours["create_orchestration||ship_order"]
    workflow = ours["orchestration||ship_order"]
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert create.parent_span_id == server.span_id
    assert workflow.parent_span_id == create.span_id
    for name in ("activity||charge_card", "activity||book_courier", "timer"):
        assert ours[name].parent_span_id == workflow.span_id, name

    assert attrs(workflow) == {
        "durabletask.type": "orchestration",
        "durabletask.task.name": "ship_order",
        "durabletask.task.instance_id": "order-7731",
        "durabletask.runtime_status": "COMPLETED",
    }
    activity = attrs(ours["activity||charge_card"])
    assert activity["durabletask.type"] == "activity"
    assert activity["durabletask.task.instance_id"] == "order-7731"
    assert activity["durabletask.task.task_id"] in (2, 3)
    assert attrs(ours["timer"])["durabletask.task.task_id"] == 1
    # The workflow span covers its activities.
    for name in ("activity||charge_card", "activity||book_courier"):
        assert workflow.start_time_unix_nano <= ours[name].start_time_unix_nano
        assert ours[name].end_time_unix_nano <= workflow.end_time_unix_nano


def test_without_an_endpoint_nothing_is_exported_but_the_trace_still_flows(tmp_path, receiver):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "devengine", "--port", str(port), "--db", str(tmp_path / "e.db")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = stubs.TaskHubSidecarServiceStub(channel)
        stub.StartInstance(
            pb.CreateInstanceRequest(
                instanceId="later-1",
                name="anything",
                scheduledStartTimestamp=_far_future(),
            ),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=15,
        )
        history_start = stub.GetInstance(
            pb.GetInstanceRequest(instanceId="later-1"), timeout=10
        ).workflowState
        assert history_start.instanceId == "later-1"
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    time.sleep(0.5)
    assert receiver.spans == []


def _far_future():
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromSeconds(int(time.time()) + 86400)
    return ts
