"""Typed helpers that read settings from environment variables.

Each helper names the variable in its error, so a bad value stops start-up with a message that
says which setting to fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(name, default)


def envbool(name: str, default: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if name not in env:
        return default
    value = env[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={env[name]!r} is not a boolean (use 1/0, true/false)")


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
