"""Sign-in with a limit on failed attempts, for the console's login page and the admin's.

Each failed password costs the server a slow hash, and nothing else stopped a script from
guessing: after ``PER_USER`` failures for one username from one address, or ``PER_ADDRESS``
from one address for any usernames, within ``WINDOW`` seconds, further attempts are refused
without checking the password until the window ends. Counts live in Django's cache (this
process's memory by default: several web processes each count their own).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

PER_USER = 5
PER_ADDRESS = 30
WINDOW = 15 * 60

REFUSED = (
    "Too many failed sign-ins from this address: try again in {minutes} minutes "
    "(your password was not checked)."
)


def _keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    address = (request.META.get("REMOTE_ADDR") if request else None) or "unknown"
    # Hashed: usernames are user input of any length, and cache keys have limits.
    user = hashlib.sha256(f"{address} {username.strip().lower()}".encode()).hexdigest()
    return [(f"signin:user:{user}", PER_USER), (f"signin:addr:{address}", PER_ADDRESS)]


def refused(request: HttpRequest | None, username: str) -> bool:
    return any(cache.get(key, 0) >= limit for key, limit in _keys(request, username))


def failed(request: HttpRequest | None, username: str) -> None:
    for key, _ in _keys(request, username):
        # The window starts at the first failure (add does nothing when the key exists).
        cache.add(key, 0, timeout=WINDOW)
        try:
            cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.add(key, 1, timeout=WINDOW)


def succeeded(request: HttpRequest | None, username: str) -> None:
    cache.delete(_keys(request, username)[0][0])


class _Limited:
    """``clean()`` of an authentication form, refusing early once the limit is reached."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]
    errors: Any
    fields: Any

    def full_clean(self) -> None:
        super().full_clean()  # type: ignore[misc]
        if self.errors:
            # Screen readers then say why with the field (the message is #login-error).
            for name in ("username", "password"):
                self.fields[name].widget.attrs.update(
                    {"aria-invalid": "true", "aria-describedby": "login-error"}
                )

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        if refused(self.request, username):
            raise forms.ValidationError(
                REFUSED.format(minutes=WINDOW // 60), code="too_many_attempts"
            )
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            failed(self.request, username)
            raise
        succeeded(self.request, username)
        return cleaned


class SignInForm(_Limited, AuthenticationForm):
    pass


class AdminSignInForm(_Limited, AdminAuthenticationForm):
    pass
