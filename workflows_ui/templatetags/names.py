"""``{{ inst.instance_id|visible_name }}``: an id or a name from workflow code or an engine as
a page shows it, the characters that would hide or reorder it written out
(``plaintext.visible_name``). Links and form values take the id itself."""

from __future__ import annotations

from django import template

from workflows_ui import plaintext

register = template.Library()


@register.filter
def visible_name(value: str | None) -> str:
    if not value:
        return ""
    return plaintext.visible_name(str(value))
