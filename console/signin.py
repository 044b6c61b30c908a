"""Sign-in with a limit on failed attempts, for the console's login page and the admin's.

Each failed password costs the server a slow hash, and nothing else stopped a script from
guessing: after ``PER_USER`` failures for one username from one address, or ``PER_ADDRESS``
from one address for any usernames, within ``WINDOW`` seconds, further attempts are refused
without checking the password until the window ends. An attempt is counted as a failure before
its password is checked (and given back when it succeeds): counted after the slow hash, attempts
sent at once were all let through while the first ones were still being checked, 80 of them
against a limit of 5. Counts live in Django's cache: Redis
when ``REDIS_URL`` is set, shared by every web process; else this process's memory, where several
web processes each count their own. A cache that fails (Redis down) stops the counting, not the
sign-ins: each failure is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

log = logging.getLogger(__name__)

PER_USER = 5
PER_ADDRESS = 30
WINDOW = 15 * 60

REFUSED = (
    "Too many failed sign-ins from this address: try again in {minutes} minutes "
    "(your password was not checked)."
)


def _keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    address = (request.META.get("REMOTE_ADDR") if request else None) or "unknown"
    # Hashed: usernames are user input of any length, and cache keys have limits. So is the
    # address: behind a proxy it is the first of X-Forwarded-For, text of any length should the
    # proxy pass on a client's own header.
    user = hashlib.sha256(f"{address} {username.strip().lower()}".encode()).hexdigest()
    addr = hashlib.sha256(address.encode()).hexdigest()
    return [(f"signin:user:{user}", PER_USER), (f"signin:addr:{addr}", PER_ADDRESS)]


def attempt(request: HttpRequest | None, username: str) -> bool:
    """Counts an attempt as failed before its password is checked, and says whether it may be
    checked: False (nothing counted) once the limit is reached, by earlier failures or by
    attempts still being checked. ``succeeded`` gives the count back."""
    counted: list[str] = []
    try:
        for key, limit in _keys(request, username):
            counted.append(key)
            if _count(key) > limit:
                for done in counted:
                    _give_back(done)
                return False
    except Exception as exc:
        _cache_failed(exc)
    return True


def succeeded(request: HttpRequest | None, username: str) -> None:
    """Clears the username's count, and gives back the address's count of this attempt
    (``attempt`` counted it): sign-ins that succeed never refuse an address."""
    try:
        (user, _), (addr, _) = _keys(request, username)
        cache.delete(user)
        _give_back(addr)
    except Exception as exc:
        _cache_failed(exc)


def not_checked(request: HttpRequest | None, username: str) -> None:
    """Gives back both counts of an attempt that could not be checked (an error, not a wrong
    password)."""
    try:
        for key, _ in _keys(request, username):
            _give_back(key)
    except Exception as exc:
        _cache_failed(exc)


def _count(key: str) -> int:
    # The window starts at the first failure (add does nothing when the key exists); incr is
    # atomic, so attempts made at once each get a count of their own.
    cache.add(key, 0, timeout=WINDOW)
    try:
        return cache.incr(key)
    except ValueError:  # expired between the two calls
        cache.add(key, 1, timeout=WINDOW)
        return 1


def _give_back(key: str) -> None:
    # ValueError: the window ended meanwhile, nothing left to give back.
    with contextlib.suppress(ValueError):
        cache.decr(key)


def _cache_failed(exc: Exception) -> None:
    # Refusing every sign-in while the cache is down would lock everyone out; the limit is
    # lifted instead, and said. The exception's text only: no frame holds a password here,
    # but a traceback in a log is noise for an outage the operator sees anyway.
    log.warning("sign-in limits not applied: the cache failed: %s", exc)


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
        if not attempt(self.request, username):
            raise forms.ValidationError(
                REFUSED.format(minutes=WINDOW // 60), code="too_many_attempts"
            )
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            raise  # a wrong password: the attempt stays counted as failed
        except Exception:
            not_checked(self.request, username)  # the database failed, say: no failure
            raise
        if getattr(self, "user_cache", None) is None:
            # No password was checked (one left empty: Django's form signs no one in then).
            # Taken for a success, it cleared the username's count of failures: a script could
            # send one such attempt after every few guesses and never be refused.
            not_checked(self.request, username)
        else:
            succeeded(self.request, username)
        return cleaned


class SignInForm(_Limited, AuthenticationForm):
    pass


class AdminSignInForm(_Limited, AdminAuthenticationForm):
    pass
