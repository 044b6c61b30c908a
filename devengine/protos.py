"""The one place devengine imports the generated workflow protos.

They come from the pinned `dapr` package (see PROTOCOL.md). Importing them runs the
`dapr.ext.workflow` package `__init__`, which instruments gRPC client channels when
opentelemetry-instrumentation-grpc is installed; devengine is a gRPC server and does not add
client instrumentation of its own.
"""

from dapr.ext.workflow._durabletask.internal import (
    history_events_pb2,
    orchestration_pb2,
    orchestrator_actions_pb2,
    orchestrator_service_pb2,
    orchestrator_service_pb2_grpc,
)
from google.protobuf import empty_pb2, timestamp_pb2, wrappers_pb2

pb = orchestrator_service_pb2
grpc_stubs = orchestrator_service_pb2_grpc
HistoryEvent = history_events_pb2.HistoryEvent
TaskFailureDetails = orchestration_pb2.TaskFailureDetails
TraceContext = orchestration_pb2.TraceContext
TaskRouter = orchestration_pb2.TaskRouter
WorkflowInstance = orchestration_pb2.WorkflowInstance
WorkflowState = orchestration_pb2.WorkflowState
ParentInstanceInfo = orchestration_pb2.ParentInstanceInfo
WorkflowAction = orchestrator_actions_pb2.WorkflowAction
Empty = empty_pb2.Empty
Timestamp = timestamp_pb2.Timestamp
StringValue = wrappers_pb2.StringValue

RUNNING = orchestration_pb2.ORCHESTRATION_STATUS_RUNNING
COMPLETED = orchestration_pb2.ORCHESTRATION_STATUS_COMPLETED
CONTINUED_AS_NEW = orchestration_pb2.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
FAILED = orchestration_pb2.ORCHESTRATION_STATUS_FAILED
CANCELED = orchestration_pb2.ORCHESTRATION_STATUS_CANCELED
TERMINATED = orchestration_pb2.ORCHESTRATION_STATUS_TERMINATED
PENDING = orchestration_pb2.ORCHESTRATION_STATUS_PENDING
SUSPENDED = orchestration_pb2.ORCHESTRATION_STATUS_SUSPENDED
STALLED = orchestration_pb2.ORCHESTRATION_STATUS_STALLED

TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, TERMINATED, CANCELED})

PATCH_MISMATCH = orchestration_pb2.PATCH_MISMATCH
VERSION_NOT_AVAILABLE = orchestration_pb2.VERSION_NOT_AVAILABLE
PAYLOAD_SIZE_EXCEEDED = orchestration_pb2.PAYLOAD_SIZE_EXCEEDED

__all__ = [
    "pb",
    "grpc_stubs",
    "history_events_pb2",
    "orchestration_pb2",
    "orchestrator_actions_pb2",
]
