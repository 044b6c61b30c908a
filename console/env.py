"""Typed helpers that read settings from environment variables.

Each helper names the variable in its error, so a bad value stops start-up with a message that
says which setting to fix.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def envstr(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(name, default)


def envbool(name: str, default: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip().lower()
    if not value:
        # Empty is unset, as for the other helpers: `CONSOLE_SERVE_STATIC=` in a compose file
        # meant to leave the default, not to turn static files off.
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={env[name]!r} is not a boolean (use 1/0, true/false)")


def envlist(name: str, default: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list, each item stripped; empty is unset (the default). A value of
    separators alone is refused: `CONSOLE_ALLOWED_HOSTS=" , "` would answer every request 400."""
    env = os.environ if environ is None else environ
    given = env.get(name, "")
    if not given.strip():
        given = default
    items = [item.strip() for item in given.split(",") if item.strip()]
    if given.strip() and not items:
        raise ImproperlyConfigured(f"{name}={env[name]!r} names nothing (comma-separated)")
    return items


def envint(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    minimum: int | None = None,
) -> int:
    env = os.environ if environ is None else environ
    if name not in env or env[name].strip() == "":
        return default
    try:
        value = int(env[name])
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env[name]!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def envfloat(
    name: str,
    default: float,
    environ: Mapping[str, str] | None = None,
    minimum: float | None = None,
) -> float:
    env = os.environ if environ is None else environ
    if name not in env or env[name].strip() == "":
        return default
    try:
        value = float(env[name])
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env[name]!r} is not a number") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={env[name]!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def envchoice(
    name: str, default: str, choices: Sequence[str], environ: Mapping[str, str] | None = None
) -> str:
    """One of ``choices`` (any case given, returned as listed)."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        return default
    for choice in choices:
        if value.upper() == choice.upper():
            return choice
    raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")


def envurlprefix(
    name: str, reserved: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> str:
    """A path the console is reached under (``/dapr``, ``/tools/dapr``), without a trailing
    slash; "" when unset or ``/``. Each segment is letters, digits and ``-._~`` (nothing a proxy
    or a browser would encode or resolve), none is ``.`` or ``..``, and the first is none of
    ``reserved`` (the console's own first segments: ``/api`` could not be told from the API)."""
    env = os.environ if environ is None else environ
    given = env.get(name, "")
    value = given.strip()
    if value in ("", "/"):
        return ""
    if not value.startswith("/"):
        raise ImproperlyConfigured(f"{name}={given!r} must start with / (like /dapr)")
    segments = value.removesuffix("/").split("/")[1:]
    for segment in segments:
        if segment in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._~-]+", segment):
            raise ImproperlyConfigured(
                f"{name}={given!r}: each segment is letters, digits and -._~, "
                "none empty, . or .. (like /dapr or /tools/dapr)"
            )
    if segments[0] in reserved:
        raise ImproperlyConfigured(
            f"{name}={given!r} starts with one of the console's own paths ({', '.join(reserved)})"
        )
    return "/" + "/".join(segments)


def private_file(path: Path) -> None:
    """Makes ``path`` readable and writable by its owner only, creating it empty when missing.

    For a SQLite database: it holds sessions, API tokens and password hashes, and SQLite gives
    its -wal and -shm files the database's mode. The directory stays as it is (it may hold
    collectstatic's output for a web server running as another user)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        # Made before this rule (or by hand): narrowed if it is ours.
        for made in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                info = made.stat()
                if info.st_mode & 0o077 and info.st_uid == os.getuid():
                    made.chmod(0o600)
            except FileNotFoundError:
                pass
    except OSError as exc:
        raise ImproperlyConfigured(f"{path} can't be created ({exc.strerror})") from None


def secret_key(var_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``CONSOLE_SECRET_KEY``, or else a key of this installation's own kept in
    ``var_dir/secret-key`` (made on first start). A default written in the code would let anyone
    who has read it sign session cookies of this console."""
    env = os.environ if environ is None else environ
    given = env.get("CONSOLE_SECRET_KEY", "")
    if given:
        return given
    path = var_dir / "secret-key"
    if not path.exists():
        try:
            var_dir.mkdir(parents=True, exist_ok=True)
            # Written whole under another name, then linked: processes starting together all
            # read the one that was linked first, never a half-written file.
            fd, tmp = tempfile.mkstemp(dir=var_dir, prefix=".secret-key-")
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise ImproperlyConfigured(
                f"CONSOLE_SECRET_KEY is not set and {path} can't be written ({exc.strerror})"
            ) from None
    key = path.read_text().strip()
    if len(key) < 32:
        raise ImproperlyConfigured(
            f"{path}: too short for a secret key; delete it or set CONSOLE_SECRET_KEY"
        )
    return key
