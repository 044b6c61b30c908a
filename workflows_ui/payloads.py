"""Payloads for display: pretty-printed JSON, cut beyond a limit (with a link to all of it).

Payloads are the user's data and untrusted: these functions return plain text, and templates
escape it (never ``|safe``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from workflows_ui import timeline
from workflows_ui.history import parse_time
from workflows_ui.models import Instance
from workflows_ui.plaintext import visible, visible_name

#: Characters of a payload shown on the detail page; the rest behind "see all".
DISPLAY_LIMIT = 4000
#: Characters of the failure message and of a stall's description shown in the summary.
SUMMARY_TEXT_LIMIT = 1000
#: Characters of an event's details shown in the history table.
EVENT_LIMIT = 2000
SUMMARY_LIMIT = 140
#: JSON is indented only while the indented text stays within this many characters, or
#: ``PRETTY_FACTOR`` times the stored text when that is more; beyond, it is shown as stored.
#: Indenting adds depth × lines characters: 50 KB of JSON can make tens of megabytes.
PRETTY_LIMIT = 256 * 1024
PRETTY_FACTOR = 4


class _NotShownExactly(ValueError):
    """JSON whose parsed value would show something else than its text says."""


def _exact_float(text: str) -> float:
    # A float that can't hold the number (1e400 becomes inf, 0.1000000000000000055 becomes
    # 0.1, an amount of 20 digits loses its cents) would be shown as another number.
    number = float(text)
    if not math.isfinite(number) or Decimal(repr(number)) != Decimal(text):
        raise _NotShownExactly(text)
    return number


def _no_constant(text: str) -> Any:
    # NaN and Infinity are not JSON, though Python's parser takes them.
    raise _NotShownExactly(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A dict keeps the last of duplicate keys: the others would vanish from the page.
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _NotShownExactly("duplicate keys")
    return value


def parse_exactly(text: str) -> Any:
    """The value a JSON text holds, when showing it again says the same as the text: raises
    ValueError for text that isn't JSON and for JSON that can't be (a number a float can't
    hold, NaN or Infinity, a key twice in an object), which is then shown as stored."""
    return json.loads(
        text,
        parse_float=_exact_float,
        parse_constant=_no_constant,
        object_pairs_hook=_unique_keys,
    )


def _indented(value: Any, bound: int) -> str | None:
    """``value`` as indented JSON, or None when that is longer than ``bound`` characters or
    nests too deep to encode; made a piece at a time, so a huge one costs no more than
    ``bound``."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(value):
            size += len(chunk)
            if size > bound:
                return None
            chunks.append(chunk)
    except (RecursionError, ValueError, TypeError):
        return None
    return "".join(chunks)


def _compact(value: Any) -> str:
    """A parsed JSON value on one line (what the history table shows when it can't indent)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        return "(nested too deep to show)"


def pretty(value: Any, limit: int | None) -> tuple[str, bool]:
    """``value`` (a JSON text, or already-parsed JSON) indented; ``(text, was_cut)``.

    A text that isn't JSON, nests too deep, or whose indented form would pass the bound
    (``PRETTY_LIMIT``) is shown as it is, so the work and the page stay within a few times
    the stored text, whatever the payload."""
    if isinstance(value, str):
        text = value
        try:
            parsed = parse_exactly(value)
        except (ValueError, RecursionError):
            pass
        else:
            text = _indented(parsed, max(PRETTY_LIMIT, PRETTY_FACTOR * len(value))) or value
    else:
        text = _indented(value, PRETTY_LIMIT) or _compact(value)
    text = visible(text)
    if limit is not None and len(text) > limit:
        return text[:limit], True
    return text, False


#: Keys of an event's details that hold a payload: JSON text the SDK wrote, inside the event.
_EVENT_PAYLOAD_KEYS = ("input", "result")


@dataclass
class EventDetails:
    """An event's details as the history shows them: ``text`` (JSON, cut to a limit) and the
    failure's stack trace apart, as lines."""

    text: str
    cut: bool
    stack_trace: str = ""
    stack_cut: bool = False


def _decoded(text: str) -> Any:
    """A payload's JSON text as the value it holds; text that isn't JSON as it is."""
    try:
        return parse_exactly(text)
    except (ValueError, RecursionError):
        return text


def event_details(details: Any, limit: int | None) -> EventDetails | None:
    """An event's details to read: its input or result (JSON text in the event, which the JSON
    of the event shows as one line of escaped quotes) as the JSON it holds, and the stack trace
    of its failure (one string, its line breaks written ``\\n``) taken out to be shown as
    lines. None for an event with no details (a workflowStarted): nothing to open. The
    history's download keeps the details as the engine sent them."""
    if details is None or details == {} or details == []:
        return None
    if not isinstance(details, dict):
        text, cut = pretty(details, limit)
        return EventDetails(text, cut)
    readable = dict(details)
    for key in _EVENT_PAYLOAD_KEYS:
        if isinstance(readable.get(key), str):
            readable[key] = _decoded(readable[key])
    stack = ""
    failure = readable.get("failureDetails")
    if isinstance(failure, dict) and isinstance(failure.get("stackTrace"), str):
        stack = visible(failure["stackTrace"])
        readable["failureDetails"] = {k: v for k, v in failure.items() if k != "stackTrace"}
    text, cut = pretty(readable, limit)
    stack_cut = limit is not None and len(stack) > limit
    return EventDetails(text, cut, stack[:limit] if stack_cut else stack, stack_cut)


@dataclass
class Payload:
    key: str
    label: str
    text: str
    cut: bool
    #: Characters the engine sent; more than stored when the indexer kept only the first part.
    size: int
    stored: int
    url: str

    @property
    def stored_cut(self) -> bool:
        return self.size > self.stored


#: Payloads that have a page of their own: key -> (label, field, size field or None, JSON?).
FIELDS: dict[str, tuple[str, str, str | None, bool]] = {
    "input": ("Input", "input", "input_size", True),
    "output": ("Output", "output", "output_size", True),
    "custom_status": ("Custom status", "custom_status", "custom_status_size", True),
    "stack_trace": ("Stack trace", "failure_stack_trace", None, False),
    "failure_message": ("Failure message", "failure_message", None, False),
    "stall_description": ("Stall description", "stall_description", None, False),
}
#: Shown in the payloads section of the detail page (the others sit in its summary).
SECTION_KEYS = ("input", "output", "custom_status", "stack_trace")


def instance_payload(
    inst: Instance, key: str, base: str = "", limit: int | None = None
) -> Payload | None:
    """One payload of ``inst`` (cut to ``limit``), or None if it has none of that name."""
    if key not in FIELDS:
        return None
    label, field, size_field, is_json = FIELDS[key]
    raw: str = getattr(inst, field) or ""
    if not raw:
        return None
    if is_json:
        text, cut = pretty(raw, limit)
    else:
        text = visible(raw)
        text, cut = (
            (text[:limit], True) if limit is not None and len(text) > limit else (text, False)
        )
    size = max(getattr(inst, size_field) if size_field else 0, len(raw))
    return Payload(key, label, text, cut, size, len(raw), f"{base}payload/{key}/")


class InstancePayloads(list[Payload]):
    """The payloads section's items (input, output, custom status, stack trace), and the texts
    shown in the summary: ``failure_message`` and ``stall_description`` (None when empty)."""

    def __init__(
        self,
        items: list[Payload],
        failure_message: Payload | None,
        stall_description: Payload | None,
    ) -> None:
        super().__init__(items)
        self.failure_message = failure_message
        self.stall_description = stall_description


def instance_payloads(
    inst: Instance, base: str, limit: int | None = DISPLAY_LIMIT
) -> InstancePayloads:
    """What the detail page shows of ``inst``'s payloads, each cut with a link to all of it."""
    items = [instance_payload(inst, key, base, limit) for key in SECTION_KEYS]
    summary_limit = SUMMARY_TEXT_LIMIT if limit is not None else None
    return InstancePayloads(
        [p for p in items if p is not None],
        instance_payload(inst, "failure_message", base, summary_limit),
        instance_payload(inst, "stall_description", base, summary_limit),
    )


def _text(value: Any) -> str:
    """A value of an event's details as text: a string as it is, nothing for null."""
    if value is None:
        return ""
    return value if isinstance(value, str) else _compact(value)


def _short(text: str) -> str:
    # One line that names activities, events and child ids: written out as names are.
    text = visible_name(text)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def _due(fire_at: str, now: datetime | None) -> str:
    """How far a timer's fireAt is from the page's time, as " (in 4 s at page load)"."""
    if now is None:
        return ""
    relative = timeline.from_page_load(parse_time(fire_at), now)
    return f" ({relative})" if relative else ""


#: Events that hand work to an app: an activity to run, a child workflow to start.
_ROUTED_WORK = ("taskScheduled", "childWorkflowInstanceCreated")


def other_app(event_type: str, details: Any) -> str:
    """The app an activity or a child workflow was handed to, when the workflow named another
    than its own (a multi-app workflow: ``router.targetAppID``); "" otherwise."""
    if event_type not in _ROUTED_WORK or not isinstance(details, dict):
        return ""
    router = details.get("router")
    if not isinstance(router, dict):
        return ""
    target, source = router.get("targetAppID"), router.get("sourceAppID")
    return target if isinstance(target, str) and target and target != source else ""


def _never_fired(fire_at: str, now: datetime | None, run_ended: str) -> str:
    """What became of a timer its run outlived (``run_ended``: see ``event_summary``)."""
    fire = parse_time(fire_at)
    # With its last turn unread too, a timer due after the page's time can't have fired.
    if run_ended == "unread" and not (fire and now and fire > now):
        fate = "whether it fired is not known: the run's last turn was not read"
    else:
        fate = "it did not fire: the run ended first"
    return f"was to fire at {fire_at}; {fate}"


def event_summary(
    event_type: str, details: Any, now: datetime | None = None, run_ended: str = ""
) -> str:
    """One line about an event for the history table (the full details sit beside it).
    ``now``: the page's time, which a timer's fire time is said relative to. ``run_ended``,
    for a timerCreated that no timerFired answers: "" while the run goes on; "ended" when the
    run ended without it firing; "unread" when the run's last turn is in no history (it may
    have fired there). A timer of an ended run never fires: its time is not said from now.

    The engine leaves out empty values, so any key may be missing: each is looked up with a
    fallback, and details that aren't an object are taken as empty."""
    d: dict[str, Any] = details if isinstance(details, dict) else {}

    def get(key: str) -> str:
        return _text(d.get(key))

    if event_type in ("taskScheduled", "childWorkflowInstanceCreated", "executionStarted"):
        child = get("instanceId") if event_type == "childWorkflowInstanceCreated" else ""
        extra = f" → {child}" if child else ""
        return _short(f"input {get('input')}{extra}") if "input" in d else _short(extra.strip())
    if event_type in ("taskCompleted", "childWorkflowInstanceCompleted"):
        return _short(f"result {get('result')}") if "result" in d else ""
    if event_type in ("taskFailed", "childWorkflowInstanceFailed", "executionCompleted"):
        fd = d.get("failureDetails")
        if isinstance(fd, dict):
            return _short(f"{_text(fd.get('errorType'))}: {_text(fd.get('errorMessage'))}")
        if fd:
            return _short(_text(fd))
        return _short(f"result {get('result')}") if "result" in d else ""
    if event_type == "timerCreated":
        fire_at = get("fireAt")
        if "externalEvent" in d:
            event = d.get("externalEvent")
            name = _text(event.get("name")) if isinstance(event, dict) else _text(event)
            waiting = _short(f"waiting for event {name}".strip())
            if not fire_at or fire_at.startswith("9999-"):  # a wait with no timeout
                return waiting
            # The event may have come, or the run ended: its timeout is not said from now.
            due = "" if run_ended else _due(fire_at, now)
            # Apart from the name (the app's, of any length), so the cut never takes the time.
            return waiting + _short(f", timeout at {fire_at}{due}")
        if run_ended:
            return _short(_never_fired(fire_at, now, run_ended))
        return _short(f"fires at {fire_at}{_due(fire_at, now)}")
    if event_type == "timerFired":
        return _short(f"timer {get('timerId')} fired (due {get('fireAt')})")
    if event_type in ("eventRaised", "eventSent"):
        to = f" to {get('instanceId')}" if get("instanceId") else ""
        return _short(f"{get('name')}{to} {get('input')}".strip())
    if event_type in ("executionSuspended", "executionResumed", "executionTerminated"):
        return _short(get("input"))
    if event_type == "executionStalled":
        return _short(f"{get('reason')} {get('description')}".strip())
    return ""
