"""How the app's own text (payloads, error messages, reasons, labels) is shown on a page: the
characters a page would not show as they are, written out. Apart from ``payloads`` and
``timeline`` because both use it, and ``payloads`` uses the timeline's relative times."""

from __future__ import annotations

import re

#: What a page would not show as it is: control characters (but tab, line feed and carriage
#: return, which lay out pretty-printed JSON and stack traces), the invisible marks that reorder
#: the text around them or break its lines (bidirectional controls, the line and paragraph
#: separators), the byte order mark, and lone surrogates (from a JSON escape such as
#: ``"\\ud800"``, which the Dapr SDKs write: a page can't be encoded with one in it).
_HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)


def visible(text: str) -> str:
    """``text`` with each character a page would not show (``_HIDDEN``) written as its JSON
    escape, ``\\u0007``: in a JSON payload that is the same value, as JSON writes the others."""
    if _HIDDEN.search(text) is None:
        return text
    return _HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
