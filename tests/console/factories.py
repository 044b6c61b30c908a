"""Small helpers that create rows directly, for view and API tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import F

from workflows_ui.models import Engine, Instance, Run, StatusCount

_seq = itertools.count(1)
T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def engine(name: str = "orders", **kwargs: Any) -> Engine:
    defaults = {"address": "127.0.0.1:50001", **kwargs}
    obj, _ = Engine.objects.get_or_create(name=name, defaults=defaults)
    return obj


def instance(eng: Engine | None = None, **kwargs: Any) -> Instance:
    n = next(_seq)
    created = kwargs.pop("created_at", T0 + timedelta(seconds=n))
    fields: dict[str, Any] = {
        "engine": eng or engine(),
        "instance_id": f"inst-{n:05d}",
        "name": "two_steps",
        "status": "COMPLETED",
        "created_at": created,
        "last_updated_at": created,
    }
    fields.update(kwargs)
    inst = Instance.objects.create(**fields)
    if not inst.purged:
        # Counted as the indexer counts what it writes (the list reads these counts).
        counted, _ = StatusCount.objects.get_or_create(
            engine=inst.engine, name=inst.name, status=inst.status
        )
        StatusCount.objects.filter(pk=counted.pk).update(count=F("count") + 1)
    return inst


def run(inst: Instance, **kwargs: Any) -> Run:
    fields: dict[str, Any] = {
        "instance": inst,
        "execution_id": f"exec-{next(_seq)}",
        "ordinal": inst.runs.count() + 1,
        "name": inst.name,
        "status": inst.status,
    }
    fields.update(kwargs)
    return Run.objects.create(**fields)
