"""URL converters for instance ids, which are arbitrary strings.

Dapr checks the ids a person types, but an SDK or a parent workflow may start an instance under
any string: ':' in child ids, and '/', '%', '.', '..' or a newline in others.
"""

from __future__ import annotations

import re

_ESCAPE = {"%": "%25", "/": "%2F"}
_UNESCAPE = re.compile("%(25|2F|2E)", re.IGNORECASE)


class PageInstanceId:
    """An instance id as one path segment of the console's pages, whatever it holds.

    The server decodes a path once before routing, so an id's '/' sent as '%2F' would split it
    into segments again, and 'x/runs/1' would be run 1 of instance 'x'; browsers also resolve
    '.' and '..' segments ('a/../b' opened instance 'b'). So '%' and '/' (and a whole '.' or
    '..') are escaped once more before the usual encoding: the page links are the console's
    own, and ordinary ids (letters, digits, '-', '_', ':') keep their plain URLs.
    """

    regex = r"[^/]+"

    def to_python(self, value: str) -> str:
        return _UNESCAPE.sub(lambda m: bytes.fromhex(m.group(1)).decode(), value)

    def to_url(self, value: str) -> str:
        escaped = "".join(_ESCAPE.get(c, c) for c in value)
        if escaped in (".", ".."):
            escaped = escaped.replace(".", "%2E")
        return escaped


class ApiInstanceId:
    """An instance id in the REST API: the rest of the path, url-encoded the standard way by
    clients (any character, newlines too; the more specific routes come first)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
