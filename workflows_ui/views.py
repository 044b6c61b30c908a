"""HTML views. The instance list and detail pages are built on these models next."""

from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from workflows_ui.models import Engine, StatusCount


def home(request: HttpRequest) -> HttpResponse:
    engines = list(Engine.objects.all())
    totals = {
        row["engine"]: row["total"]
        for row in StatusCount.objects.values("engine").annotate(total=Sum("count"))
    }
    for engine in engines:
        engine.instance_total = totals.get(engine.pk, 0)  # type: ignore[attr-defined]
    return render(request, "workflows_ui/home.html", {"engines": engines})
