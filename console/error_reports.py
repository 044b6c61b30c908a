"""What error reports (Django's debug pages, mails to ADMINS) may show of a frame's variables."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter


class EngineTokenFilter(SafeExceptionReporterFilter):
    """Django's filter, which also hides every variable holding an engine's API token, in
    debug pages too: the settings dump masks them already, but gRPC's own frames hold a call's
    metadata as plain tuples (``("dapr-api-token", "...")``), and a failed engine call in a
    view would print them."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Django's masking, and the credentials of a URL in any setting: Django hides settings
        by their names only, and ``REDIS_URL``, the cache's ``LOCATION``, the channel layer's
        ``hosts`` and ``_DATABASE_URL`` carry a password in a name it does not hide."""
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return _CREDENTIALS.sub(rf"\1{self.cleansed_substitute}@", cleansed)
        return cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        tokens = [c.token for c in settings.CONSOLE_ENGINES if c.token]
        if not tokens:
            return variables
        return [
            (name, self.cleansed_substitute if _holds(value, tokens) else value)
            for name, value in variables
        ]


# The user and password of a URL (redis://:password@host, postgres://user:password@host/db).
_CREDENTIALS = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/]*@", re.IGNORECASE)


def _holds(value: Any, tokens: list[str]) -> bool:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__: the report shows it as such anyway
        return False
    return any(token in text for token in tokens)
