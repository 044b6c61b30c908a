"""How the app's own text (payloads, error messages, reasons, labels) and the ids and names that
come from workflow code or an engine are shown on a page: the characters a page would not show
as they are, written out. Apart from ``payloads`` and ``timeline`` because both use it, and
``payloads`` uses the timeline's relative times."""

from __future__ import annotations

import re

#: What a page would not show as it is: control characters (but tab, line feed and carriage
#: return, which lay out pretty-printed JSON and stack traces), the invisible marks that reorder
#: the text around them or break its lines (bidirectional controls, the line and paragraph
#: separators), the byte order mark, and lone surrogates (from a JSON escape such as
#: ``"\\ud800"``, which the Dapr SDKs write: a page can't be encoded with one in it).
_HIDDEN_CHARACTERS = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
    "\ufeff\ud800-\udfff"
)
_HIDDEN = re.compile(f"[{_HIDDEN_CHARACTERS}]")

#: What an id or a name would hide besides: an id is an identifier, not prose, so two that
#: differ must not look the same. Tab and line breaks (a page shows them as a space), and the
#: characters that show as nothing: the soft hyphen, the combining grapheme joiner, the Hangul
#: fillers, the Khmer inherent vowels, the Mongolian vowel separator, the zero-width space, the
#: word joiner and invisible operators, the deprecated format characters, the shorthand format
#: controls, the musical format characters and the tags ("ASCII smuggling"). Not the zero-width
#: joiner and non-joiner nor the variation selectors: emoji and the words of several scripts
#: are made with them.
_HIDDEN_IN_NAMES = re.compile(
    f"[{_HIDDEN_CHARACTERS}\t\n\r\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b"
    "\u2060-\u2064\u206a-\u206f\u3164\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e007f]"
)


def _escape(match: re.Match[str]) -> str:
    """A character as JSON writes it escaped: past U+FFFF, as its two surrogates."""
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with each character a page would not show (``_HIDDEN``) written as its JSON
    escape, ``\\u0007``: in a JSON payload that is the same value, as JSON writes the others."""
    if _HIDDEN.search(text) is None:
        return text
    return _HIDDEN.sub(_escape, text)


def visible_name(text: str) -> str:
    """An id or a name (instance, execution, workflow, activity, event, app) as a page shows
    it: as ``visible``, and with tabs, line breaks and the characters that show as nothing
    written out too (``_HIDDEN_IN_NAMES``). Only what is shown: links, form values, the
    download and the API keep the id as it is."""
    if _HIDDEN_IN_NAMES.search(text) is None:
        return text
    return _HIDDEN_IN_NAMES.sub(_escape, text)
