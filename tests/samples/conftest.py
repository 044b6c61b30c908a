"""Fixtures for the sample workloads' tests."""

from __future__ import annotations

import pytest
from dapr.ext.workflow import WorkflowRuntime

from devengine.samples import workflows


@pytest.fixture(scope="session")
def sample_runtime() -> WorkflowRuntime:
    # Registration marks the functions themselves, so it can happen once per process; the
    # runtime never connects (start() is not called).
    runtime = WorkflowRuntime(host="127.0.0.1", port="1")
    workflows.register(runtime)
    return runtime


@pytest.fixture(autouse=True)
def no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Activities sleep to look like remote calls; unit tests don't need the wait."""
    monkeypatch.setattr(workflows, "_simulate_latency", lambda *parts, **kw: None)
