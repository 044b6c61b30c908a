"""Payloads for display: pretty-printed JSON, cut beyond a limit (with a link to all of it).

Payloads are the user's data and untrusted: these functions return plain text, and templates
escape it (never ``|safe``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workflows_ui.models import Instance

#: Characters of a payload shown on the detail page; the rest behind "see all".
DISPLAY_LIMIT = 4000
#: Characters of an event's details shown in the history table.
EVENT_LIMIT = 2000
SUMMARY_LIMIT = 140


def pretty(value: Any, limit: int | None) -> tuple[str, bool]:
    """``value`` (a JSON text, or already-parsed JSON) indented; ``(text, was_cut)``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            text = value
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        return text[:limit], True
    return text, False


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


def instance_payloads(
    inst: Instance, base: str, limit: int | None = DISPLAY_LIMIT
) -> list[Payload]:
    out = []
    for key, label, raw, size in (
        ("input", "Input", inst.input, inst.input_size),
        ("output", "Output", inst.output, inst.output_size),
        ("custom_status", "Custom status", inst.custom_status, inst.custom_status_size),
    ):
        if not raw:
            continue
        text, cut = pretty(raw, limit)
        out.append(
            Payload(key, label, text, cut, max(size, len(raw)), len(raw), f"{base}payload/{key}/")
        )
    if inst.failure_stack_trace:
        raw = inst.failure_stack_trace
        text, cut = (raw[:limit], True) if limit is not None and len(raw) > limit else (raw, False)
        out.append(
            Payload(
                "stack_trace",
                "Stack trace",
                text,
                cut,
                len(raw),
                len(raw),
                f"{base}payload/stack_trace/",
            )
        )
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def event_summary(event_type: str, details: dict[str, Any]) -> str:
    """One line about an event for the history table (the full details sit beside it)."""
    d = details or {}
    if event_type in ("taskScheduled", "childWorkflowInstanceCreated", "executionStarted"):
        extra = f" → {d['instanceId']}" if event_type == "childWorkflowInstanceCreated" else ""
        return _short(f"input {d['input']}{extra}") if "input" in d else extra.strip()
    if event_type in ("taskCompleted", "childWorkflowInstanceCompleted"):
        return _short(f"result {d['result']}") if "result" in d else ""
    if event_type in ("taskFailed", "childWorkflowInstanceFailed", "executionCompleted"):
        fd = d.get("failureDetails")
        if isinstance(fd, dict):
            return _short(f"{fd.get('errorType', '')}: {fd.get('errorMessage', '')}")
        return _short(f"result {d['result']}") if "result" in d else ""
    if event_type == "timerCreated":
        if "externalEvent" in d:
            name = (d.get("externalEvent") or {}).get("name", "")
            return _short(f"waiting for event {name}")
        return _short(f"fires at {d.get('fireAt', '')}")
    if event_type == "timerFired":
        return _short(f"timer {d.get('timerId', '')} fired (due {d.get('fireAt', '')})")
    if event_type in ("eventRaised", "eventSent"):
        to = f" to {d['instanceId']}" if "instanceId" in d else ""
        return _short(f"{d.get('name', '')}{to} {d.get('input', '')}".strip())
    if event_type in ("executionSuspended", "executionResumed", "executionTerminated"):
        return _short(d["input"]) if "input" in d else ""
    if event_type == "executionStalled":
        return _short(f"{d.get('reason', '')} {d.get('description', '')}".strip())
    return ""
