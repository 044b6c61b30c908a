"""Pure functions from the engine's protobuf messages to ``engine_bridge.types``.

They read message attributes only (no import of the generated stubs), so they are tested with
messages parsed from the real engine's recorded JSON (tests/golden).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from engine_bridge.types import (
    STATUS_NAMES,
    Event,
    Failure,
    InstanceState,
    ParentRef,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Pairing fields of completions (see PROTOCOL.md "Pairing for timelines").
_RELATED_FIELD = {
    "taskCompleted": "taskScheduledId",
    "taskFailed": "taskScheduledId",
    "childWorkflowInstanceCompleted": "taskScheduledId",
    "childWorkflowInstanceFailed": "taskScheduledId",
    "timerFired": "timerId",
}
#: Keys of the events' payloads (JSON the app's SDK wrote): input, or an activity's, a child's or
#: the workflow's result.
_PAYLOAD_KEYS = ("input", "result")
_NAMED = {
    "executionStarted",
    "taskScheduled",
    "childWorkflowInstanceCreated",
    "eventRaised",
    "eventSent",
}


# What daprd sends for a time it doesn't have: Go's zero time (0001-01-01), such as the created
# and last-updated times of an instance whose first turn hasn't committed (a scheduled start).
_GO_ZERO_TIME = -62135596800


def timestamp(ts: Any) -> datetime | None:
    """A protobuf Timestamp as an aware datetime (microseconds), None when unset or zero."""
    if ts is None or (ts.seconds in (0, _GO_ZERO_TIME) and ts.nanos == 0):
        return None
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _opt_str(msg: Any, field: str) -> str | None:
    """A google.protobuf.StringValue field: None when absent."""
    return getattr(msg, field).value if msg.HasField(field) else None


# A \uXXXX escape (an odd run of backslashes before the u), or a surrogate pair of them.
_U_ESCAPE = re.compile(
    r"(\\+)u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|(\\+)u([0-9a-fA-F]{4})"
)


def _unescape(m: re.Match[str]) -> str:
    slashes = m.group(1) or m.group(4)
    if len(slashes) % 2 == 0:  # an escaped backslash followed by a plain "u"
        return m.group(0)
    if m.group(2):
        high, low = int(m.group(2), 16), int(m.group(3), 16)
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
    else:
        code = int(m.group(5), 16)
        if code < 0x80 or 0xD800 <= code <= 0xDFFF:
            return m.group(0)  # quotes, backslashes, control characters and lone surrogates
    return slashes[:-1] + chr(code)


def readable_json(text: str | None) -> str | None:
    """A JSON payload with its non-ASCII characters written as themselves.

    The Dapr SDKs serialize with ``ensure_ascii``: "Müller" arrives as ``"M\\u00fcller"``, which
    text search would split into "M" and "u00fcller". The same JSON value, with only those
    escapes replaced; a text that isn't JSON is left as it is."""
    if not text or "\\u" not in text:
        return text
    try:
        value = json.loads(text)
        readable = _U_ESCAPE.sub(_unescape, text)
        # Escapes are only read inside strings, where this is sound; checked all the same.
        return readable if json.loads(readable) == value else text
    except (ValueError, RecursionError):
        return text


# PostgreSQL refuses a NUL character in text and in jsonb (as ``\u0000``): an instance holding
# one, such as an exception message built from a binary record, could not be indexed at all.
_NUL = "\x00"
_NUL_JSON = "\\u0000"
#: What a NUL is stored as, on every database.
NUL_REPLACEMENT = "\ufffd"


@overload
def without_nul(text: str) -> str: ...
@overload
def without_nul(text: None) -> None: ...
def without_nul(text: str | None) -> str | None:
    """``text`` with its NUL characters replaced (a payload, failure text or name)."""
    return text.replace(_NUL, NUL_REPLACEMENT) if text and _NUL in text else text


def _without_nul_json(value: Any) -> Any:
    """Copy of a JSON value with NUL characters replaced in its strings and keys."""
    if isinstance(value, str):
        return value.replace(_NUL, NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {k.replace(_NUL, NUL_REPLACEMENT): _without_nul_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul_json(v) for v in value]
    return value


def failure(details: Any) -> Failure:
    stack_trace = details.stackTrace.value if details.HasField("stackTrace") else ""
    return Failure(
        type=without_nul(details.errorType),
        message=without_nul(details.errorMessage),
        stack_trace=without_nul(stack_trace),
    )


def status_name(number: int) -> str:
    return STATUS_NAMES.get(number, f"UNKNOWN_{number}")


def instance_state(response: Any) -> InstanceState | None:
    """GetInstanceResponse -> InstanceState, or None when ``exists`` is false."""
    if not response.exists:
        return None
    st = response.workflowState
    return InstanceState(
        instance_id=st.instanceId,
        name=without_nul(st.name),
        status=status_name(st.workflowStatus),
        created_at=timestamp(st.createdTimestamp),
        last_updated_at=timestamp(st.lastUpdatedTimestamp),
        version=without_nul(st.version.value) if st.HasField("version") else "",
        # Unset timestamps read as zero, which timestamp() maps to None.
        started_at=timestamp(st.startedAt),
        completed_at=timestamp(st.completedTimestamp),
        scheduled_start_at=timestamp(st.scheduledStartTimestamp),
        input=without_nul(readable_json(_opt_str(st, "input"))),
        output=without_nul(readable_json(_opt_str(st, "output"))),
        custom_status=without_nul(readable_json(_opt_str(st, "customStatus"))),
        failure=failure(st.failureDetails) if st.HasField("failureDetails") else None,
        execution_id=st.executionId.value if st.HasField("executionId") else "",
        parent_instance_id=st.parentInstanceId.value if st.HasField("parentInstanceId") else "",
        parent_app_id=st.parentAppId.value if st.HasField("parentAppId") else "",
    )


# protobuf's JSON mapping, fast --------------------------------------------------------------------
#
# ``json_format.MessageToDict`` walks every field in Python and is most of what mapping a history
# costs. ``to_dict`` gives the same result for the messages of the workflow protocol with one
# compiled converter per field; a message type using a part of the mapping it does not implement
# (floats, maps, Any, Struct, Duration, extensions) goes through MessageToDict.

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_WRAPPERS = frozenset(
    {
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.BoolValue",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
    }
)
_Convert = Any  # Callable[[Any], Any]; None: the type needs MessageToDict
#: Per message type: field number -> (JSON name, repeated, converter); None: MessageToDict.
#: (Proto3 messages have no extensions, so a field number names a field.)
_converters: dict[str, dict[int, tuple[str, bool, _Convert]] | None] = {}
_by_class: dict[type, dict[int, tuple[str, bool, _Convert]] | None] = {}
_building: set[str] = set()
_lock = threading.Lock()


def _identity(value: Any) -> Any:
    return value


def _bytes_json(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _timestamp_json(value: Any) -> str:
    return value.ToJsonString()


def _enum_json(field: FieldDescriptor) -> _Convert:
    names = {v.number: v.name for v in field.enum_type.values}
    return lambda value: names.get(value, value)


def _scalar_converter(field: FieldDescriptor) -> _Convert | None:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL) or kind in _INT_TYPES:
        return _identity
    if kind in _INT64_TYPES:
        return str
    if kind == FieldDescriptor.TYPE_BYTES:
        return _bytes_json
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_json(field)
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message_converter(field.message_type)
    return None  # float, double, group


def _map_converter(field: FieldDescriptor) -> _Convert | None:
    key = field.message_type.fields_by_name["key"]
    value = _scalar_converter(field.message_type.fields_by_name["value"])
    if value is None or key.type == FieldDescriptor.TYPE_BOOL:
        return None
    return lambda entries: {str(k): value(v) for k, v in entries.items()}


def _message_converter(desc: Descriptor) -> _Convert | None:
    name = desc.full_name
    if name == "google.protobuf.Timestamp":
        return _timestamp_json
    if name in _WRAPPERS:
        inner = _scalar_converter(desc.fields_by_name["value"])
        return None if inner is None else (lambda msg: inner(msg.value))
    if name.startswith("google.protobuf.") and name != "google.protobuf.Empty":
        return None  # Any, Struct, Value, Duration, FieldMask...: their own mappings
    if name not in _converters and name not in _building:
        # Recursive fields (innerFailure) meet the type being built and call to_dict, which
        # finds it built by then. Built under _lock; published when complete.
        _building.add(name)
        fields: dict[int, tuple[str, bool, _Convert]] | None = {}
        for field in desc.fields:
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            convert = _map_converter(field) if is_map else _scalar_converter(field)
            if convert is None:
                fields = None
                break
            listed = field.is_repeated and not is_map
            fields[field.number] = (field.json_name, listed, convert)  # type: ignore[index]
        _converters[name] = fields
        _building.discard(name)
    return to_dict


def to_dict(message: Any) -> dict[str, Any]:
    """``json_format.MessageToDict(message)`` (defaults left out, camelCase names)."""
    cls = type(message)
    if cls in _by_class:
        fields = _by_class[cls]
    else:
        with _lock:  # the indexer maps answers in several threads
            name = message.DESCRIPTOR.full_name
            if name not in _converters:
                _message_converter(message.DESCRIPTOR)
            fields = _by_class[cls] = _converters[name]
    if fields is None:
        return json_format.MessageToDict(message)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name, listed, convert = fields[field.number]
        if listed:
            out[name] = [convert(v) for v in value]
        else:
            out[name] = convert(value)
    return out


def truncate_strings(value: Any, limit: int, path: str = "", cut: list[str] | None = None) -> Any:
    """Copy of a JSON value with every string longer than ``limit`` cut to ``limit``; the paths
    of cut strings are appended to ``cut``."""
    if isinstance(value, str):
        if len(value) > limit:
            if cut is not None:
                cut.append(path)
            return value[:limit]
        return value
    if isinstance(value, dict):
        return {
            k: truncate_strings(v, limit, f"{path}.{k}" if path else k, cut)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [truncate_strings(v, limit, f"{path}[{i}]", cut) for i, v in enumerate(value)]
    return value


def event(ev: Any, payload_limit: int = 65536) -> Event:
    """HistoryEvent -> Event. ``details`` is the payload in protobuf's JSON mapping (camelCase,
    enums by name, RFC 3339 times), plus ``router`` when set; its input or result is readable
    (``readable_json``)."""
    etype = ev.WhichOneof("eventType") or "unknown"
    body = getattr(ev, etype) if etype != "unknown" else None
    details: dict[str, Any] = to_dict(body) if body is not None else {}
    routed = ev.HasField("router")
    if routed:
        details["router"] = to_dict(ev.router)
    for key in _PAYLOAD_KEYS:
        # Readable as the instance's payloads (``instance_state``), and so cut on that text.
        text = details.get(key)
        if isinstance(text, str):
            details[key] = readable_json(text)
    # No string of the JSON can be longer than the serialized event (base64 and the few
    # generated strings, times and enum names, stay within twice that and under 64).
    if payload_limit < 64 or 2 * ev.ByteSize() > payload_limit:
        cut: list[str] = []
        details = truncate_strings(details, payload_limit, cut=cut)
        if cut:
            details["_truncated"] = cut
    details_json = orjson.dumps(details).decode()
    if _NUL_JSON in details_json:  # (or an escaped backslash before "u0000": rare, and harmless)
        details = _without_nul_json(details)
        details_json = orjson.dumps(details).decode()
    out = Event(
        event_id=ev.eventId,
        event_type=etype,
        timestamp=timestamp(ev.timestamp),
        details=details,
        details_json=details_json,
        source_app_id=ev.router.sourceAppID if routed else "",
    )
    if body is None:
        return out
    if etype in _NAMED:
        out.name = without_nul(body.name)
    related = _RELATED_FIELD.get(etype)
    if related:
        out.related_id = getattr(body, related)
    if etype == "executionStarted":
        out.execution_id = body.workflowInstance.executionId.value
        # The run's copy of the input: readable as the instance's (``instance_state``).
        out.input = without_nul(readable_json(body.input.value)) if body.HasField("input") else None
        out.version = without_nul(body.version.value) if body.HasField("version") else ""
        if body.HasField("parentTraceContext"):
            out.trace_parent = body.parentTraceContext.traceParent
        if body.HasField("parentInstance"):
            p = body.parentInstance
            out.parent = ParentRef(
                instance_id=p.workflowInstance.instanceId,
                execution_id=p.workflowInstance.executionId.value,
                app_id=p.appID if p.HasField("appID") else "",
                name=p.name.value if p.HasField("name") else "",
                task_scheduled_id=p.taskScheduledId,
            )
    elif etype == "timerCreated":
        if body.HasField("name"):
            out.name = without_nul(body.name)
        elif body.WhichOneof("origin") == "externalEvent":
            out.name = without_nul(body.externalEvent.name)
    elif etype == "workflowStarted":
        if body.HasField("version") and body.version.HasField("name"):
            out.version = without_nul(body.version.name)
    elif etype == "executionStalled":
        out.stall_reason = details.get("reason", "")
        out.stall_description = (
            without_nul(body.description) if body.HasField("description") else ""
        )
        out.name = out.stall_reason
    elif etype == "executionCompleted":
        out.name = status_name(body.workflowStatus)
    return out


def pair_names(events: list[Event], known: dict[int, str] | None = None) -> dict[int, str]:
    """Give completions (taskCompleted, timerFired, ...) the name of the event they pair with,
    using ``known`` (eventId -> name of earlier events of the run) and the events themselves.
    Returns the updated mapping."""
    names = dict(known or {})
    for ev in events:
        if ev.event_type in ("taskScheduled", "childWorkflowInstanceCreated", "timerCreated"):
            names[ev.event_id] = ev.name
        elif ev.related_id is not None and not ev.name:
            ev.name = names.get(ev.related_id, "")
    return names
