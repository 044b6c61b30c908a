"""The few exceptions an engine call raises (gRPC status codes mapped in engine_bridge.client)."""

from __future__ import annotations


class EngineError(Exception):
    """Any failed engine call. ``code`` is the gRPC status name, ``operation`` the RPC."""

    #: True when retrying the same call later may succeed.
    transient = False

    def __init__(self, message: str, *, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.operation = operation

    def __str__(self) -> str:
        prefix = f"{self.operation}: " if self.operation else ""
        suffix = f" ({self.code})" if self.code else ""
        return f"{prefix}{self.message}{suffix}"


class EngineUnavailable(EngineError):
    """The engine can't be reached or didn't answer before the deadline."""

    transient = True


class InstanceNotFound(EngineError):
    """The engine has no such instance."""


class NotSupported(EngineError):
    """The engine (an older Dapr sidecar) does not implement this call."""


class EngineRejected(EngineError):
    """The engine refused the call; ``message`` is the engine's own text (show it)."""


class Stopping(Exception):
    """The process is stopping: a call was given up before the engine answered. Not an engine
    error (the engine may be fine): nothing is recorded about the engine."""
