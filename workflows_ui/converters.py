"""URL converters for engine names and instance ids.

Dapr checks the ids a person types, but an SDK or a parent workflow may start an instance under
any string: ':' in child ids, and '/', '%', '.', '..' or a newline in others. Not a NUL, though,
which no database of the console can hold (PostgreSQL answers a query holding one with an
error): a path with one matches no route, a 404.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest
from django.urls import register_converter

_ESCAPE = {"%": "%25", "/": "%2F"}
_UNESCAPE = re.compile("%(25|2F|2E)", re.IGNORECASE)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL")  # the route does not match
    return value


def sent_as_utf8(request: HttpRequest) -> bool:
    """Whether the path, as the client sent it, is UTF-8 once percent-decoded. The server
    decodes it before Django routes it, each byte that is no UTF-8 made U+FFFD: an id read from
    such a path (``%FF``) is not the one sent, no engine holds it (ids are UTF-8 strings in
    gRPC), and it may be another id, one holding U+FFFD itself. True when the server does not
    pass the path on as sent (``raw_path``)."""
    scope = getattr(request, "scope", None)
    raw = scope.get("raw_path") if scope else None
    if not raw:
        return True
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


#: What a path that is not UTF-8 is answered (``sent_as_utf8``).
NOT_UTF8 = (
    "the instance id is not valid: its %-escapes decode to bytes that are not UTF-8, and "
    "every instance id is UTF-8 text"
)


class EngineName:
    """An engine's name, as ``CONSOLE_ENGINES`` allows it (``engine_bridge.config``)."""

    regex = r"[a-z0-9][a-z0-9_-]{0,39}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


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
        return _UNESCAPE.sub(lambda m: bytes.fromhex(m.group(1)).decode(), _no_nul(value))

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
        return _no_nul(value)

    def to_url(self, value: str) -> str:
        return value


# Here, once: the pages' and the API's routes both use them.
register_converter(EngineName, "engine_name")
register_converter(PageInstanceId, "page_instance_id")
register_converter(ApiInstanceId, "api_instance_id")
