"""``{{ size|characters }}``: a payload's size as the console counts it, in characters (a
payload is text; its size in bytes depends on the encoding, so "bytes" would be wrong)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def characters(value: int | None) -> str:
    if value is None:
        return ""
    return "1 character" if value == 1 else f"{value:,} characters"
