"""Sign-in with a limit on failed attempts, for the console's login page and the admin's.

Each failed password costs the server a slow hash, and nothing else stopped a script from
guessing: after ``PER_USER`` failures for one username from one address, or ``PER_ADDRESS``
from one address for any usernames, within ``WINDOW`` seconds, further attempts are refused
without checking the password until the window ends.

Two counts are kept for each: the failures, and the attempts being checked. An attempt is
checked only while the two together stay within the limit, so attempts sent at once (a script's
80 guesses) still get only the limit checked. One that finds every place taken by attempts
being checked waits for them, instead of being refused as the failure it may not be: six
correct sign-ins at once, or a double-click after four typos, all sign in. Counts live in
Django's cache: Redis when ``REDIS_URL`` is set, shared by every web process; else this
process's memory, where several web processes each count their own. A cache that fails (Redis
down) stops the counting, not the sign-ins: each failure is logged.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import time
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import backends as auth_backends
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest

log = logging.getLogger(__name__)

PER_USER = 5
PER_ADDRESS = 30
WINDOW = 15 * 60
#: Seconds an attempt waits for the attempts being checked ahead of it (a password check takes
#: about a second, longer when 30 are hashed at once on a small machine).
WAIT = 30
#: Seconds between two looks at the counts while waiting.
POLL = 0.05
#: Seconds a count of attempts being checked lasts after the last one began: far longer than a
#: check, so that it never lapses under one, and what a process that died mid-check left in it
#: is forgotten once sign-ins pause.
CHECKING_TTL = 5 * 60

REFUSED = (
    "Too many failed sign-ins from this address: try again in {minutes} minutes "
    "(your password was not checked)."
)
BUSY = (
    "Too many sign-ins at once for this username or address: try again in a moment "
    "(your password was not checked)."
)


class Verdict(enum.Enum):
    """What ``attempt`` decided about a sign-in's password."""

    CHECK = "check"
    TOO_MANY_FAILURES = "too many failures"
    TOO_MANY_AT_ONCE = "too many at once"


def _keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    address = (request.META.get("REMOTE_ADDR") if request else None) or "unknown"
    # Hashed: usernames are user input of any length, and cache keys have limits. So is the
    # address: behind a proxy it is the first of X-Forwarded-For, text of any length should the
    # proxy pass on a client's own header.
    user = hashlib.sha256(f"{address} {username.strip().lower()}".encode()).hexdigest()
    addr = hashlib.sha256(address.encode()).hexdigest()
    # The address first: one it refuses adds no count for each new username it tries (in this
    # process's memory, counts beyond the cache's size push out the oldest).
    return [(f"signin:addr:{addr}", PER_ADDRESS), (f"signin:user:{user}", PER_USER)]


def attempt(request: HttpRequest | None, username: str) -> Verdict:
    """Says whether the password of this attempt may be checked. CHECK counts it as being
    checked, in both its counts, until ``failed``, ``succeeded`` or ``not_checked`` says how the
    check went. Refused at once when the failures reached a limit; when the attempts being
    checked fill what the failures leave, waits (``WAIT`` at most) for them to end.

    Why wait rather than refuse: an attempt being checked is not yet a failure, and refused as
    one it turned correct sign-ins sent together away. Why not check it anyway: only a check
    tells a correct password from a guess, and checking every attempt sent at once is what let
    a script's burst of guesses through. Waiting, a correct sign-in is late by a check at most;
    a burst of guesses sees the failures reach the limit, and is refused."""
    keys = _keys(request, username)
    deadline = time.monotonic() + WAIT
    try:
        while (verdict := _take_places(keys)) is None:
            if time.monotonic() >= deadline:
                return Verdict.TOO_MANY_AT_ONCE
            _release_database()
            time.sleep(POLL)
        return verdict
    except Exception as exc:
        _cache_failed(exc)
        return Verdict.CHECK


def failed(request: HttpRequest | None, username: str) -> None:
    """Counts a wrong password among both counts' failures, and ends its check."""
    try:
        for key, _ in _keys(request, username):
            # The failure counted before the check ends: any moment sees it in one count or the
            # other, never in neither (see _take).
            _count(_failures(key), WINDOW)
            _give_back(_checking(key))
    except Exception as exc:
        _cache_failed(exc)


def succeeded(request: HttpRequest | None, username: str) -> None:
    """Clears the username's failures and ends the attempt's check: sign-ins that succeed
    never refuse an address, and do not clear its failures either (others' guesses)."""
    try:
        (addr, _), (user, _) = _keys(request, username)
        cache.delete(_failures(user))
        _give_back(_checking(user))
        _give_back(_checking(addr))
    except Exception as exc:
        _cache_failed(exc)


def not_checked(request: HttpRequest | None, username: str) -> None:
    """Ends the check of an attempt whose password could not be checked (an error, or none
    given), counting no failure."""
    try:
        for key, _ in _keys(request, username):
            _give_back(_checking(key))
    except Exception as exc:
        _cache_failed(exc)


def _failures(key: str) -> str:
    return f"{key}:failed"


def _checking(key: str) -> str:
    return f"{key}:checking"


def _take_places(keys: list[tuple[str, int]]) -> Verdict | None:
    """A place among the attempts being checked in each count, or none (None: all taken)."""
    taken: list[str] = []
    for key, limit in keys:
        verdict = _take(key, limit)
        if verdict is not Verdict.CHECK:
            for done in taken:
                _give_back(_checking(done))
            return verdict
        taken.append(key)
    return Verdict.CHECK


def _take(key: str, limit: int) -> Verdict | None:
    # A look first, so that attempts waiting do not each add to the count at every look, and
    # briefly keep the others out.
    counts = cache.get_many([_failures(key), _checking(key)])
    failures = counts.get(_failures(key), 0)
    if failures >= limit:
        return Verdict.TOO_MANY_FAILURES
    if failures + counts.get(_checking(key), 0) >= limit:
        return None
    # Counted first, the failures read after: a check that ended in between counted its
    # failure before it left the other count, so it is seen in one of them (twice at worst,
    # which only makes this attempt wait a little), never missed.
    checking = _count(_checking(key), CHECKING_TTL)
    cache.touch(_checking(key), CHECKING_TTL)
    failures = cache.get(_failures(key), 0)
    if failures + checking <= limit:
        return Verdict.CHECK
    _give_back(_checking(key))
    return Verdict.TOO_MANY_FAILURES if failures >= limit else None


def _count(key: str, timeout: int) -> int:
    # The count lasts from its first attempt (add does nothing when the key exists); incr is
    # atomic, so attempts made at once each get a count of their own.
    cache.add(key, 0, timeout=timeout)
    try:
        n = cache.incr(key)
    except ValueError:  # expired between the two calls
        cache.add(key, 1, timeout=timeout)
        return 1
    if n == 1:
        # Redis's incr, after Django's look that the key exists, makes a key that lapsed in
        # between anew with no expiry: a count that never ended would refuse for good.
        cache.touch(key, timeout)
    return n


def _give_back(key: str) -> None:
    # ValueError: the count lapsed meanwhile, nothing left to give back.
    with contextlib.suppress(ValueError):
        if cache.decr(key) < 0:
            # It lapsed just after Django's look (Redis made it anew at -1, with no expiry):
            # gone, as it would be, rather than a place too many for good.
            cache.delete(key)


def _release_database() -> None:
    # On PostgreSQL a request holds a connection of the process's pool from its first query to
    # its end: one waiting here would keep it from the requests that have work for it. Django
    # takes it again at the next query. (Not within a transaction, which it would end.)
    if not connection.in_atomic_block:
        connection.close()


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
        verdict = attempt(self.request, username)
        if verdict is Verdict.TOO_MANY_FAILURES:
            raise forms.ValidationError(
                REFUSED.format(minutes=WINDOW // 60), code="too_many_attempts"
            )
        if verdict is Verdict.TOO_MANY_AT_ONCE:
            raise forms.ValidationError(BUSY, code="too_many_at_once")
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            failed(self.request, username)  # a wrong password
            raise
        except BaseException:
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


class ModelBackend(auth_backends.ModelBackend):
    """Django's, but the request's database connection is handed back while the password is
    hashed. The hash takes about half a second of CPU, and a web process's PostgreSQL pool holds
    10 connections: sign-ins at once kept them all, and other requests waited for one until they
    failed (503). Django takes a connection again at the next query.

    A password it checked and refused raises PermissionDenied, which ends Django's
    ``authenticate`` as a failed sign-in: Django's backend, listed after this one for the
    sessions it signed in, would otherwise hash the same password again."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        User: Any = auth_backends.UserModel
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            _release_database()
            # A hash all the same: an unknown username takes as long as a wrong password.
            User().set_password(password)
            raise PermissionDenied from None
        _release_database()
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        raise PermissionDenied


class SignInForm(_Limited, AuthenticationForm):
    pass


class AdminSignInForm(_Limited, AdminAuthenticationForm):
    pass
