"""``mappers.to_dict`` is protobuf's JSON mapping (``json_format.MessageToDict``), only faster."""

import threading
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from engine_bridge import mappers
from engine_bridge.client import pb
from tests.console.conftest import GOLDEN_DIR, load_golden


def golden_events() -> list:
    events = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        record = load_golden(Path(path).stem)
        histories = [record["history"], *record.get("children", {}).values()]
        for history in histories:
            events += [json_format.ParseDict(e, pb.HistoryEvent()) for e in history]
    return events


def test_every_recorded_event_maps_as_message_to_dict_does():
    events = golden_events()
    assert len(events) > 50
    for ev in events:
        assert mappers.to_dict(ev) == json_format.MessageToDict(ev)


def test_maps_recursion_wrappers_enums_and_presence():
    ev = pb.HistoryEvent(eventId=7)
    started = ev.executionStarted
    started.name = "wf"
    started.tags["team"] = "billing"
    started.tags["tier"] = ""
    started.parentInstance.taskScheduledId = 0
    started.parentInstance.name.value = ""  # a wrapper set to its default is still present
    started.scheduledStartTimestamp.FromNanoseconds(1_700_000_000_123_456_789)
    failed = pb.HistoryEvent(eventId=-1)
    details = failed.taskFailed.failureDetails
    details.errorType = "E"
    details.innerFailure.errorType = "Inner"
    details.innerFailure.innerFailure.errorMessage = "deepest"
    done = pb.HistoryEvent(eventId=3)
    done.executionCompleted.workflowStatus = pb.ORCHESTRATION_STATUS_FAILED
    for message in (ev, failed, done, pb.HistoryEvent()):
        assert mappers.to_dict(message) == json_format.MessageToDict(message)


@pytest.mark.parametrize("limit", [40, 300, 65536])
def test_long_strings_are_cut_whatever_the_limit(limit):
    ev = pb.HistoryEvent(eventId=1)
    ev.taskScheduled.name = "charge"
    ev.taskScheduled.input.value = "x" * 1000
    out = mappers.event(ev, payload_limit=limit)
    if limit < 1000:
        assert len(out.details["input"]) == limit
        assert out.details["_truncated"] == ["input"]
    else:
        assert out.details["input"] == "x" * 1000
        assert "_truncated" not in out.details


def test_converters_built_by_concurrent_threads_are_complete(monkeypatch):
    monkeypatch.setattr(mappers, "_converters", {})
    monkeypatch.setattr(mappers, "_by_class", {})
    build_field = mappers._scalar_converter

    def slow_build(field):  # widen the window in which a half-built type could be seen
        time.sleep(0.001)
        return build_field(field)

    monkeypatch.setattr(mappers, "_scalar_converter", slow_build)
    events = golden_events()
    barrier = threading.Barrier(8)
    failures = []

    def work():
        barrier.wait()
        try:
            for ev in events:
                assert mappers.to_dict(ev) == json_format.MessageToDict(ev)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
