"""A fake engine at the one seam (the indexer's ``Client``), fed with the real engine's
recorded answers (golden files) or hand-made states."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from google.protobuf import json_format

from engine_bridge import mappers
from engine_bridge.client import pb
from engine_bridge.errors import EngineError, EngineUnavailable, InstanceNotFound, NotSupported
from engine_bridge.types import Event, InstancePage, InstanceState
from tests.console.conftest import load_golden


def golden_instance(name: str, history_key: str | None = None) -> tuple[InstanceState, list[Event]]:
    record = load_golden(name)
    state = mappers.instance_state(
        json_format.ParseDict(record["get_instance"], pb.GetInstanceResponse())
    )
    assert state is not None
    events = [mappers.event(json_format.ParseDict(e, pb.HistoryEvent())) for e in record["history"]]
    mappers.pair_names(events)
    return state, events


def golden_child(name: str, child_id: str) -> tuple[InstanceState, list[Event]]:
    record = load_golden(name)
    events = [
        mappers.event(json_format.ParseDict(e, pb.HistoryEvent()))
        for e in record["children"][child_id]
    ]
    mappers.pair_names(events)
    started = events[1]
    state = InstanceState(
        instance_id=child_id,
        name=started.name,
        status="COMPLETED",
        created_at=started.timestamp,
        last_updated_at=events[-1].timestamp,
        input=started.input,
        output=events[-1].details.get("result"),
    )
    return state, events


class FakeEngine:
    """Instances in memory; ``down`` makes every call fail as an unreachable engine would."""

    def __init__(self) -> None:
        self.instances: dict[str, tuple[InstanceState, list[Event]]] = {}
        self.down = False
        self.unsupported: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.listing_hides: set[str] = set()
        #: (method, instance id or "") -> the error that call raises.
        self.failing: dict[tuple[str, str], EngineError] = {}
        self._lock = threading.Lock()

    # Test helpers
    def add(self, state: InstanceState, events: list[Event], instance_id: str | None = None) -> str:
        iid = instance_id or state.instance_id
        self.instances[iid] = (replace(state, instance_id=iid), copy.deepcopy(events))
        return iid

    def append(self, instance_id: str, new_events: list[Event], **state_changes: object) -> None:
        state, events = self.instances[instance_id]
        moved = state.last_updated_at + timedelta(seconds=1)  # type: ignore[operator]
        changes = {"last_updated_at": moved, **state_changes}
        self.instances[instance_id] = (replace(state, **changes), events + new_events)  # type: ignore[arg-type]

    def _check(self, method: str, arg: str = "") -> None:
        with self._lock:
            self.calls.append((method, arg))
        if self.down:
            raise EngineUnavailable("connection refused", code="UNAVAILABLE", operation=method)
        if method in self.unsupported:
            raise NotSupported("unknown method " + method, code="UNIMPLEMENTED", operation=method)
        if (method, arg) in self.failing:
            raise self.failing[(method, arg)]

    # The Client protocol
    def hello(self, timeout: float | None = None) -> None:
        self._check("Hello")

    def list_instance_ids(
        self, page_size: int = 1000, continuation_token: str = ""
    ) -> InstancePage:
        self._check("ListInstanceIDs", continuation_token)
        ids = sorted(i for i in self.instances if i not in self.listing_hides)
        start = int(continuation_token or 0)
        page = ids[start : start + page_size]
        more = start + page_size < len(ids)
        return InstancePage(page, str(start + page_size) if more else "")

    def get_instance(self, instance_id: str, payloads: bool = True) -> InstanceState | None:
        # ("GetInstance", id) in ``failing`` fails the call with payloads only, as an answer
        # over the size limit does; ("GetInstance without payloads", id) the other.
        self._check("GetInstance" if payloads else "GetInstance without payloads", instance_id)
        found = self.instances.get(instance_id)
        if found is None:
            return None
        if payloads:
            return found[0]
        return replace(found[0], input=None, output=None, custom_status=None, failure=None)

    def get_history(self, instance_id: str) -> list[Event]:
        self._check("GetInstanceHistory", instance_id)
        found = self.instances.get(instance_id)
        if found is None:
            if instance_id == "":
                raise InstanceNotFound("no instance", code="NOT_FOUND")
            raise InstanceNotFound(f"instance {instance_id} not found", code="NOT_FOUND")
        return copy.deepcopy(found[1])

    def get_instance_later(
        self,
        instance_id: str,
        done: Callable[[InstanceState | None | EngineError], None],
        payloads: bool = True,
    ) -> None:
        try:
            answer: InstanceState | None | EngineError = self.get_instance(instance_id, payloads)
        except EngineError as exc:
            answer = exc
        done(answer)

    def get_history_later(
        self, instance_id: str, done: Callable[[list[Event] | EngineError], None]
    ) -> None:
        try:
            answer: list[Event] | EngineError = self.get_history(instance_id)
        except EngineError as exc:
            answer = exc
        done(answer)

    def supports_rerun(self) -> bool:
        self._check("Hello")
        return "RerunWorkflowFromEvent" not in self.unsupported

    def close(self) -> None:
        pass
