"""The console under a path prefix (``CONSOLE_URL_PREFIX``), behind a proxy that passes the
path on as it is (``/dapr/instances/``) or takes the prefix off (``/instances/``)."""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]


class UnderPrefix:
    """Hands the application every request's path with the prefix, and the prefix as its
    ``root_path``, whichever way the proxy sent it: Django takes the prefix off again to route
    (``request.path_info``), the static files are looked for under it, and every link it writes
    carries it. The prefix alone (``/dapr``) is its home page, as ``/dapr/`` is.

    A path that starts with the prefix is taken as passed on: the prefix's first segment is none
    of the console's own (see ``CONSOLE_TOP_PATHS``), so no path of the console can be taken for
    one with the prefix."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = self.prefixed(scope)
        await self.app(scope, receive, send)

    def prefixed(self, scope: Scope) -> Scope:
        prefix = self.prefix
        path: str = scope["path"]
        raw: bytes | None = scope.get("raw_path")
        if path == prefix:
            path, raw = prefix + "/", raw and raw + b"/"
        elif not path.startswith(prefix + "/"):  # the proxy took the prefix off
            path, raw = prefix + path, raw and prefix.encode() + raw
        return {**scope, "path": path, "raw_path": raw, "root_path": prefix}
