"""A worker that lacks the workflow version a history was written with stalls the instance
until a worker that has it connects."""

from __future__ import annotations

import grpc
import pytest
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import Engine, has_kind, of_kind, split_address, unique_id
from engine_workflows import PATCH_ORDER, VERSIONED, register_all


def start_runtime(
    address: str, versions: tuple[str, ...] = ("v1", "v2"), old_patch_order: bool = False
) -> WorkflowRuntime:
    host, port = split_address(address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime, versions=versions, old_patch_order=old_patch_order)
    runtime.start()
    return runtime


@pytest.mark.slow
def test_a_missing_workflow_version_stalls_the_instance(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    instance_id = unique_id("stall")
    try:
        # A worker with v1 and v2 starts the instance: its history says v2.
        newer = start_runtime(own_engine.address, ("v1", "v2"))
        try:
            engine.start(VERSIONED, instance_id)
            assert engine.history(instance_id)[0].workflowStarted.version.name == "v2"
        finally:
            newer.shutdown()

        # Only a worker that knows v1 is left when the next turn comes.
        older = start_runtime(own_engine.address, ("v1",))
        try:
            engine.raise_event(instance_id, "go", '"x"')
            engine.wait_status(instance_id, "STALLED", timeout=20)
            events = engine.wait_history(instance_id, has_kind("executionStalled"))
        finally:
            older.shutdown()

        (stalled,) = of_kind(events, "executionStalled")
        assert stalled.eventId == -1
        assert stalled.executionStalled.reason == pb.VERSION_NOT_AVAILABLE
        assert not has_kind("executionCompleted")(events)

        # A worker that has v2 again picks the instance up where it stopped.
        newer = start_runtime(own_engine.address, ("v1", "v2"))
        try:
            done = engine.wait_done(instance_id, timeout=20)
        finally:
            newer.shutdown()
        assert done.workflowState.output.value == '"v2 x"'
    finally:
        engine.close()


@pytest.mark.slow
def test_patches_that_do_not_match_the_history_stall_the_instance(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    instance_id = unique_id("patch-stall")
    try:
        newer = start_runtime(own_engine.address)
        try:
            engine.start(PATCH_ORDER, instance_id)
            patches = engine.history(instance_id)[0].workflowStarted.version.patches
            assert list(patches) == ["patch2", "patch1"]
        finally:
            newer.shutdown()

        older = start_runtime(own_engine.address, old_patch_order=True)
        try:
            engine.raise_event(instance_id, "go", '"x"')
            engine.wait_status(instance_id, "STALLED", timeout=20)
            events = engine.wait_history(instance_id, has_kind("executionStalled"))
        finally:
            older.shutdown()

        (stalled,) = of_kind(events, "executionStalled")
        assert stalled.executionStalled.reason == pb.PATCH_MISMATCH
        assert "patch2, patch1" in stalled.executionStalled.description
        assert not has_kind("executionCompleted")(events)

        # A stalled instance is not terminal: only a forced purge removes it. daprd's workflow
        # actor says why (a recursive purge checks that it finished first, and says that).
        with pytest.raises(grpc.RpcError) as refused:
            engine.purge(instance_id)
        assert refused.value.details() == "failed to purge workflow state: workflow is stalled"
        with pytest.raises(grpc.RpcError) as refused:
            engine.purge(instance_id, recursive=True)
        assert "orchestration has not yet completed" in refused.value.details()
        assert engine.status(instance_id) == "STALLED"
        # Nor does it take an event: no turn runs to receive it (daprd's actor refuses it).
        with pytest.raises(grpc.RpcError) as raised:
            engine.raise_event(instance_id, "approval", '"yes"')
        assert raised.value.code() == grpc.StatusCode.UNKNOWN
        assert raised.value.details() == "workflow is stalled"
        assert engine.purge(instance_id, force=True).deletedInstanceCount == 1
        assert engine.get(instance_id).exists is False
    finally:
        engine.close()
