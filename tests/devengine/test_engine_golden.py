"""The devengine's histories against the ones the real Dapr engine wrote for the same workflows.

Each file in golden/ was recorded from dapr/durabletask-go driven by the Dapr Python SDK 1.19.0
(see golden/README.md). Here each workflow runs again (same name, input and driving steps, from
engine_workflows.py) and its history must match: the same event types in the same order, the same
eventIds and pairing fields, the same payload strings and failure details. What is specific to a
recording is left out: timestamps, executionIds, taskExecutionIds (only their pairing is kept),
stack traces, router and parent app ids, trace contexts, timer due times other than the sentinel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_support import as_dicts, has_kind, unique_id

GOLDEN_DIR = Path(__file__).parent.parent / "golden"
SENTINEL_FIRE_AT = "9999-12-31T23:59:59.999999999Z"


def load(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


# --- how each recorded workflow is driven ------------------------------------------------------


def drive_start_only(engine, golden: dict, instance_id: str) -> None:
    state = golden["get_instance"]["workflowState"]
    engine.start(state["name"], instance_id, input=state["input"] or None)


def drive_approval_event(engine, golden: dict, instance_id: str) -> None:
    drive_start_only(engine, golden, instance_id)
    raised = next(e["eventRaised"] for e in golden["history"] if "eventRaised" in e)
    engine.raise_event(instance_id, raised["name"], raised["input"])


def drive_continue_as_new(engine, golden: dict, instance_id: str) -> None:
    # The recording keeps only the last generation; the first one started from 0.
    engine.start("monitor", instance_id, input="0")


def drive_suspend_event_resume(engine, golden: dict, instance_id: str) -> None:
    engine.start("wait_forever", instance_id)
    engine.suspend(instance_id)
    # The recording has one turn per management call: wait for each before the next.
    engine.raise_event(instance_id, "go", "42")
    engine.wait_history(instance_id, has_kind("eventRaised"))
    engine.resume(instance_id)


def drive_terminated(engine, golden: dict, instance_id: str) -> None:
    engine.start("wait_forever", instance_id)
    engine.terminate(instance_id, output='"cancelled by operator"', recursive=True)


DRIVERS: dict[str, Callable] = {
    "two_steps": drive_start_only,
    "with_retry": drive_start_only,
    "approval_event_before_wait": drive_approval_event,
    "approval_timeout": drive_start_only,
    "fan_out_children": drive_start_only,
    "continue_as_new": drive_continue_as_new,
    "activity_fails": drive_start_only,
    "custom_status": drive_start_only,
    "suspend_event_resume": drive_suspend_event_resume,
    "terminated": drive_terminated,
}

# Children finish in any order and their completions may share a parent turn.
TURN_ORDER_MAY_VARY = {"fan_out_children"}


def test_every_golden_file_has_a_driver():
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.json")) == sorted(DRIVERS)


# --- normalisation -----------------------------------------------------------------------------

DROPPED_KEYS = {
    "timestamp",
    "router",
    "executionId",
    "parentTraceContext",
    "workflowSpanID",
    "stackTrace",
    "appID",
    "createdTimestamp",
    "lastUpdatedTimestamp",
    "startedAt",
    "completedTimestamp",
    "scheduledStartTimestamp",
}


def normalise(value, rename: Callable[[str], str], task_ids: dict[str, str]):
    """Drops what may differ between engines and runs; empty strings and messages count as
    absent (protobuf's JSON mapping omits unset fields, not empty wrappers)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in DROPPED_KEYS:
                continue
            if key == "fireAt":
                item = item if item == SENTINEL_FIRE_AT else "<time>"
            elif key == "taskExecutionId":
                item = task_ids.setdefault(item, f"<task {len(task_ids) + 1}>")
            else:
                item = normalise(item, rename, task_ids)
            if item in ("", {}, []):
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [normalise(item, rename, task_ids) for item in value]
    if isinstance(value, str):
        return rename(value)
    return value


def normalise_history(events: list[dict], rename) -> list[dict]:
    task_ids: dict[str, str] = {}
    out = []
    for event in events:
        normalised = normalise(event, rename, task_ids)
        # Keep the event type even when its message is empty (workflowStarted: {}).
        (event_type,) = set(event) - {"eventId", "timestamp", "router"}
        normalised.setdefault(event_type, {})
        out.append(normalised)
    return out


def turn_insensitive(events: list[dict]) -> list:
    """For histories whose turn boundaries depend on timing: drop workflowStarted and compare
    each run of inbound events (eventId -1) as a set."""
    out: list = []
    inbound: list[str] = []
    for event in events:
        if "workflowStarted" in event:
            continue
        if event.get("eventId") == -1:
            inbound.append(json.dumps(event, sort_keys=True))
            continue
        if inbound:
            out.append(sorted(inbound))
            inbound = []
        out.append(event)
    if inbound:
        out.append(sorted(inbound))
    return out


def state_fields(state: dict) -> dict:
    wanted = ("name", "workflowStatus", "input", "output", "customStatus", "failureDetails")
    return {key: state[key] for key in wanted if key in state}


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_history_matches_the_real_engine(engine, name):
    golden = load(name)
    golden_id = golden["instance_id"]
    instance_id = unique_id(golden_id)

    def rename(text: str) -> str:
        # Instance ids appear inside payloads too (child ids, failure messages).
        return text.replace(golden_id, instance_id)

    DRIVERS[name](engine, golden, instance_id)
    done = engine.wait_done(instance_id, timeout=30)

    expected_state = normalise(state_fields(golden["get_instance"]["workflowState"]), rename, {})
    got_state = normalise(state_fields(as_dicts([done.workflowState])[0]), str, {})
    assert got_state == expected_state

    expected = normalise_history(golden["history"], rename)
    got = normalise_history(as_dicts(engine.history(instance_id)), str)
    if name in TURN_ORDER_MAY_VARY:
        assert turn_insensitive(got) == turn_insensitive(expected)
    else:
        assert got == expected

    for golden_child_id, child_history in golden.get("children", {}).items():
        child_id = rename(golden_child_id)
        expected_child = normalise_history(child_history, rename)
        got_child = normalise_history(as_dicts(engine.history(child_id)), str)
        assert got_child == expected_child, f"child {child_id}"
