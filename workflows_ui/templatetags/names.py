"""``{{ inst.instance_id|visible_name }}``: an id or a name from workflow code or an engine as
a page shows it, the characters that would hide or reorder it written out
(``plaintext.visible_name``). Links and form values take the id itself. And
``{{ engine.last_error|visible }}``: text from an engine (an error, a reason), its control
characters and reordering marks written out (``plaintext.visible``)."""

from __future__ import annotations

from django import template

from workflows_ui import plaintext

register = template.Library()


@register.filter
def visible_name(value: str | None) -> str:
    if not value:
        return ""
    return plaintext.visible_name(str(value))


@register.filter
def visible(value: str | None) -> str:
    if not value:
        return ""
    return plaintext.visible(str(value))
