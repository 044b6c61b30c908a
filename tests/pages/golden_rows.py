"""The real engine's recorded histories (tests/golden) as the console stores them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from engine_bridge import mappers
from engine_bridge.client import pb
from workflows_ui.history import EventRow, info_of

GOLDEN_DIR = Path(__file__).parent.parent / "golden"


def load(name: str) -> dict[str, Any]:
    with open(GOLDEN_DIR / f"{name}.json") as f:
        return json.load(f)


def events(history: list[dict[str, Any]]) -> list[Any]:
    """The indexer's ``Event`` objects of a recorded history (same mappers, names paired)."""
    evs = [mappers.event(json_format.ParseDict(e, pb.HistoryEvent())) for e in history]
    mappers.pair_names(evs)
    return evs


def rows(history: list[dict[str, Any]]) -> list[EventRow]:
    out = []
    for position, ev in enumerate(events(history)):
        info, origin = info_of(ev.event_type, ev.details)
        out.append(
            EventRow(
                position=position,
                event_id=ev.event_id,
                event_type=ev.event_type,
                name=ev.name,
                timestamp=ev.timestamp,
                related_id=ev.related_id,
                info=info,
                origin=origin,
            )
        )
    return out
