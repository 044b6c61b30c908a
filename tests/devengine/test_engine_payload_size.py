"""A work item too big for the worker stream stalls its workflow, as daprd (1.17.7 and later)
does: the item is never sent, the other workflows keep running, and an engine restarted with a
larger --max-body-size lets the stalled one finish."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import (
    Engine,
    EngineProcess,
    WorkerProcess,
    has_kind,
    of_kind,
    rpc_error,
    split_address,
    unique_id,
    wait_for,
)
from engine_workflows import register_all

MI = 1024 * 1024
DEFAULT_MAX = 4 * MI


def threshold(max_body_size: int) -> int:
    return max_body_size * 95 // 100


def start_runtime(address: str) -> WorkflowRuntime:
    host, port = split_address(address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    return runtime


def the_stall(engine: Engine, instance_id: str) -> pb.ExecutionStalledEvent:
    """The instance's one executionStalled event, which ends its history."""
    engine.wait_status(instance_id, "STALLED", timeout=60)
    events = engine.wait_history(instance_id, has_kind("executionStalled"))
    (stalled,) = of_kind(events, "executionStalled")
    assert events[-1] is stalled
    assert stalled.eventId == -1
    assert stalled.executionStalled.reason == pb.PAYLOAD_SIZE_EXCEEDED
    return stalled.executionStalled


def assert_others_run_quietly(engine: Engine, log_path) -> None:
    """The worker stream stays usable: a workflow started now runs to its end, and the engine's
    log shows no failed send (nothing handed out again and again)."""
    small = unique_id("small")
    engine.start("two_steps", small, '{"id": "o-1", "qty": 1}')
    done = engine.wait_done(small, timeout=20)
    assert done.workflowState.workflowStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "RESOURCE_EXHAUSTED" not in log


@dataclass
class Limited:
    """An engine started with --max-body-size 1Mi on a database of its own, an SDK worker on it,
    and the engine started again with a larger limit once it is."""

    db: Path
    process: EngineProcess
    engine: Engine
    runtime: WorkflowRuntime
    restarted: EngineProcess | None = None


@contextlib.contextmanager
def engine_at_1mi(tmp_path: Path) -> Iterator[Limited]:
    db = tmp_path / "engine.sqlite3"
    process = EngineProcess(db, "--max-body-size", "1Mi").start()
    at = Limited(db, process, Engine(process.address), start_runtime(process.address))
    try:
        yield at
    finally:
        at.runtime.shutdown()
        at.engine.close()
        process.kill()
        if at.restarted is not None:
            at.restarted.kill()


def resumed_with_4mi(at: Limited, instance_id: str):
    """The engine restarted on the same database with the default limit, and the stalled
    workflow's end."""
    at.process.stop()
    at.restarted = EngineProcess(at.db, "--max-body-size", "4Mi", port=at.process.port).start()
    done = at.engine.wait_done(instance_id, timeout=30)
    assert done.workflowState.workflowStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    return done


@pytest.mark.slow
def test_a_history_too_big_to_send_stalls_only_its_workflow(own_engine):
    own_engine.start()  # the default limit, 4 MiB
    engine = Engine(own_engine.address)
    runtime = start_runtime(own_engine.address)
    big = unique_id("big-history")
    try:
        # Each result (1 MB) fits; the fourth brings history and inbox past 95% of 4 MiB.
        engine.start("grow", big, '{"steps": 6, "size": 1000000}')
        stalled = the_stall(engine, big)
        match = re.fullmatch(
            r"Workflow payload size (\d+) bytes exceeds 95% of max gRPC body size 4194304 "
            r"bytes; increase daprd --max-body-size and restart to resume",
            stalled.description,
        )
        assert match, stalled.description
        assert threshold(DEFAULT_MAX) < int(match[1]) < threshold(DEFAULT_MAX) + 1_100_000
        assert len(of_kind(engine.history(big), "taskCompleted")) == 3

        # The big one is not handed out again and again: it stays stalled, quietly.
        time.sleep(1)
        assert engine.status(big) == "STALLED"
        assert len(of_kind(engine.history(big), "executionStalled")) == 1
        assert_others_run_quietly(engine, own_engine.log_path)

        # As for any stall: no raised event, a terminate waits, a forced purge removes it.
        error = rpc_error(lambda: engine.raise_event(big, "go"))
        assert (error.code(), error.details()) == (grpc.StatusCode.UNKNOWN, "workflow is stalled")
        request = pb.TerminateRequest(instanceId=big, recursive=True)
        error = rpc_error(lambda: engine.call("TerminateInstance", request, timeout=1))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert engine.status(big) == "STALLED"
        assert engine.purge(big, force=True).deletedInstanceCount == 1
    finally:
        runtime.shutdown()
        engine.close()


@pytest.mark.slow
def test_an_activity_input_too_big_to_send_stalls_its_workflow(tmp_path):
    instance_id = unique_id("big-input")
    with engine_at_1mi(tmp_path) as at:
        engine = at.engine
        # The workflow's answer (about 1,000,100 bytes) still fits under 1 MiB; the activity
        # request does not fit under 95% of it.
        engine.start("big_activity_input", instance_id, "1000000")
        stalled = the_stall(engine, instance_id)
        match = re.fullmatch(
            r"activity 'echo::1' payload (\d+) bytes exceeds 95% of max gRPC body size 1048576 "
            r"bytes; increase daprd --max-body-size and restart to resume: activity payload "
            r"exceeds max gRPC body size",
            stalled.description,
        )
        assert match, stalled.description
        assert threshold(MI) < int(match[1]) < MI
        # Nothing of the turn that scheduled it was kept.
        assert not has_kind("taskScheduled")(engine.history(instance_id))

        # Restarted with a larger limit, the engine hands the workflow out again.
        done = resumed_with_4mi(at, instance_id)
        assert done.workflowState.output.value == "1000000"


@pytest.mark.slow
def test_a_rerun_with_an_activity_input_too_big_to_send_stalls(own_engine):
    own_engine.extra_args += ["--max-body-size", "1Mi"]
    own_engine.start()
    engine = Engine(own_engine.address)
    runtime = start_runtime(own_engine.address)
    source, rerun = unique_id("source"), unique_id("rerun")
    try:
        engine.start("big_activity_input", source, "10")
        assert engine.wait_done(source).workflowState.output.value == "10"
        (scheduled,) = of_kind(engine.history(source), "taskScheduled")
        # The re-run hands the activity out itself, with an input that does not fit.
        request = pb.RerunWorkflowFromEventRequest(
            sourceInstanceID=source,
            eventID=scheduled.eventId,
            newInstanceID=rerun,
            overwriteInput=True,
        )
        request.input.value = '"' + "x" * 999_990 + '"'
        engine.call("RerunWorkflowFromEvent", request)
        stalled = the_stall(engine, rerun)
        assert stalled.description.startswith(f"activity 'echo::{scheduled.eventId}' payload ")
        assert_others_run_quietly(engine, own_engine.log_path)
    finally:
        runtime.shutdown()
        engine.close()


@pytest.mark.slow
def test_an_activity_too_big_for_a_lowered_limit_stalls_its_workflow(tmp_path, worker_processes):
    db, markers = tmp_path / "engine.sqlite3", tmp_path / "markers"
    markers.mkdir()
    engine_process = EngineProcess(db).start()  # 4 MiB: the activity (2 MB) goes out
    engine = Engine(engine_process.address)
    instance_id = unique_id("lowered")
    try:
        first = WorkerProcess(engine_process.address, tmp_path / "first.log").start()
        worker_processes.append(first)
        args = {"steps": 1, "seconds": 60, "marker_dir": str(markers), "pad": "x" * 2_000_000}
        engine.start("slow_steps", instance_id, json.dumps(args), timeout=30)
        wait_for(lambda: list(markers.iterdir()), timeout=30, what="the activity to start")
        first.kill()
        engine_process.stop()

        # Restarted with a limit the pending activity does not fit under.
        engine_process = EngineProcess(
            db, "--max-body-size", "1Mi", port=engine_process.port
        ).start()
        second = WorkerProcess(
            engine_process.address, tmp_path / "second.log", env={"SLOW_ECHO_SECONDS": "0"}
        ).start()
        worker_processes.append(second)
        engine.wait_status(instance_id, "STALLED", timeout=30)
        assert_others_run_quietly(engine, engine_process.log_path)

        # Its history (4 MB) is too big to read under 1 MiB too: read it with no worker.
        second.kill()
        engine_process.stop()
        engine_process = EngineProcess(db, "--max-body-size", "8Mi", port=engine_process.port)
        engine_process.start()
        stalled = the_stall(engine, instance_id)
        assert stalled.description.startswith("activity 'slow_echo::1' payload 20")
        assert "max gRPC body size 1048576 bytes" in stalled.description
    finally:
        engine.close()
        engine_process.kill()


@pytest.mark.slow
def test_a_workflow_stalled_on_its_history_resumes_with_a_larger_limit(tmp_path):
    instance_id = unique_id("grow")
    with engine_at_1mi(tmp_path) as at:
        engine = at.engine
        engine.start("grow", instance_id, '{"steps": 3, "size": 400000}')
        stalled = the_stall(engine, instance_id)
        assert stalled.description.startswith("Workflow payload size ")
        assert "max gRPC body size 1048576 bytes" in stalled.description

        # The stall is kept: the same engine connected to again does not resume it.
        at.runtime.shutdown()
        at.runtime = start_runtime(at.process.address)
        time.sleep(1)
        assert engine.status(instance_id) == "STALLED"
        assert len(of_kind(engine.history(instance_id), "executionStalled")) == 1

        done = resumed_with_4mi(at, instance_id)
        assert done.workflowState.output.value == "1200000"


def test_max_body_size_accepts_daprd_quantities(capsys):
    from devengine.__main__ import main, parse_size

    assert parse_size("4Mi") == DEFAULT_MAX
    assert parse_size("512Ki") == 512 * 1024
    assert parse_size("1Gi") == 1024 * MI
    assert parse_size("2M") == 2_000_000
    assert parse_size("1000") == 1000
    assert parse_size("-1") == -1
    # A wrong one stops the start with the reason (argparse shows only its own errors' text).
    with pytest.raises(SystemExit):
        main(["--max-body-size", "4 megs"])
    assert "not a size: '4 megs' (bytes, or a number with Ki" in capsys.readouterr().err
