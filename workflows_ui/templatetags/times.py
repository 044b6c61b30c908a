"""``{% when value "datetime" %}``: a time as the console shows it, in UTC, marked up so that the
page's script can show it in the browser's time zone instead (the "Times" switch);
``from_page_load``: how far a time is from when the page was made; ``how_long_to``: how
long since a time, as of when the page was made; and ``span``: a length of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from workflows_ui import timeline

register = template.Library()

#: The formats of ``when``: strftime patterns, and the same shown by the script.
FORMATS = {
    "datetime": "%Y-%m-%d %H:%M:%S",
    "datetime-us": "%Y-%m-%d %H:%M:%S.%f",
    "time-us": "%H:%M:%S.%f",
}


@register.simple_tag
def when(value: datetime | None, fmt: str = "datetime", since: datetime | None = None) -> str:
    """``since``: for a time of day shown alone (``time-us``), the time whose day it is on in
    UTC; the script shows the date too when, in the browser's zone, the two fall on other days."""
    if value is None:
        return ""
    utc = value.astimezone(UTC)
    if since is not None and fmt == "time-us":
        return format_html(
            '<time datetime="{}" data-fmt="{}" data-since="{}">{}</time>',
            utc.isoformat(),
            fmt,
            since.astimezone(UTC).isoformat(),
            utc.strftime(FORMATS[fmt]),
        )
    return format_html(
        '<time datetime="{}" data-fmt="{}">{}</time>',
        utc.isoformat(),
        fmt,
        utc.strftime(FORMATS[fmt]),
    )


@register.filter
def from_page_load(value: datetime | None, now: datetime) -> str:
    """``{{ t|from_page_load:page_time }}``: "in 4 s at page load", "4 s ago" (plain text, which
    the template escapes)."""
    return timeline.from_page_load(value, now)


@register.filter
def how_long_to(since: datetime | None, now: datetime) -> str:
    """``{{ engine.failing_since|how_long_to:page_time }}``: "3 h 5 min" (plain text)."""
    if since is None:
        return ""
    return timeline.how_long(since, now)


@register.filter
def span(value: timedelta) -> str:
    """``{{ engine.indexer_silent_limit|span }}``: "5 min 0 s", said as ``how_long_to`` says
    how long (plain text)."""
    now = timezone.now()
    return timeline.how_long(now - value, now)
