"""Parse the engines the console reads from, out of environment variables.

``CONSOLE_ENGINES="orders=127.0.0.1:50001,billing=10.1.2.3:50001"`` names each engine (one Dapr
app's sidecar) and its gRPC address. Per engine, optionally:

- ``CONSOLE_ENGINE_TOKEN_<NAME>``: the sidecar's ``DAPR_API_TOKEN``;
- ``CONSOLE_ENGINE_TLS_<NAME>=1``: connect with TLS (system roots, or
  ``CONSOLE_ENGINE_TLS_CA_<NAME>`` = path of a PEM bundle).

``<NAME>`` is the engine name upper-cased with ``-`` turned into ``_``. Any malformed part stops
start-up with an ``ImproperlyConfigured`` naming it, and so does a per-engine variable that names
no configured engine: a misspelt ``CONSOLE_ENGINE_TLS_<NAME>`` would otherwise send the token in
clear text without a word.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from console.env import envbool

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# One DNS label; '_' too, which container runtimes allow in service names ("orders_dapr").
LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# gRPC sends metadata values as printable ASCII only.
TOKEN_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")
PER_ENGINE = ("CONSOLE_ENGINE_TOKEN_", "CONSOLE_ENGINE_TLS_CA_", "CONSOLE_ENGINE_TLS_")


@dataclass(frozen=True)
class EngineConfig:
    """How to reach one engine."""

    name: str
    address: str
    token: str = ""
    tls: bool = False
    tls_ca_file: str = ""

    def __repr__(self) -> str:  # never print the token
        return (
            f"EngineConfig(name={self.name!r}, address={self.address!r}, "
            f"token={'***' if self.token else ''!r}, tls={self.tls})"
        )


def env_suffix(name: str) -> str:
    return name.upper().replace("-", "_")


def _check_address(part: str, name: str, address: str) -> None:
    if not address:
        raise ImproperlyConfigured(f"CONSOLE_ENGINES: {part!r}: engine {name!r} has no address")
    if "://" in address or (address.startswith("dns:") and address.count(":") > 1):
        # A URL, as Dapr's SDKs take (DAPR_GRPC_ENDPOINT): here TLS is a setting of its own.
        # (``dns:50001`` is the host ``dns``, a name a Kubernetes service may have.)
        raise ImproperlyConfigured(
            f"CONSOLE_ENGINES: {part!r}: address {address!r} has a scheme: give host:port "
            f"(for TLS, set CONSOLE_ENGINE_TLS_{env_suffix(name)}=1)"
        )
    if address.startswith("["):  # [IPv6]:port
        host, sep, port = address[1:].partition("]:")
        if not sep or not host:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: address {address!r} is not [IPv6]:port"
            )
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: {host!r} is not an IPv6 address"
            ) from None
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not host:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: address {address!r} is not host:port"
            )
        if not _valid_host(host):
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: host {host!r} is not a valid host name or IPv4 address"
            )
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"CONSOLE_ENGINES: {part!r}: port {port!r} is not a number between 1 and 65535"
        )


def _valid_host(host: str) -> bool:
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(LABEL_RE.fullmatch(label) for label in labels)


def _names_an_engine(key: str, suffixes: set[str]) -> bool:
    """Whether a per-engine variable names one of the engines (by their settings suffix)."""
    return any(key.startswith(p) and key[len(p) :] in suffixes for p in PER_ENGINE)


def _check_per_engine(environ: Mapping[str, str], engines: list[EngineConfig]) -> None:
    suffixes = {env_suffix(e.name) for e in engines}
    for suffix in suffixes:  # CONSOLE_ENGINE_TLS_CA_X would be both x's CA file and ca_x's flag
        if suffix.startswith("CA_") and suffix[3:] in suffixes:
            ca_name = next(e.name for e in engines if env_suffix(e.name) == suffix)
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: engine names {ca_name!r} and {ca_name[3:]!r} can't both be "
                f"used: CONSOLE_ENGINE_TLS_{suffix} would set both"
            )
    for key in sorted(environ):
        # One set empty is unset, as every setting: a template that blanks the token of an
        # engine taken out of CONSOLE_ENGINES must not stop start-up.
        blank = not environ[key].strip()
        if key.startswith(PER_ENGINE) and not blank and not _names_an_engine(key, suffixes):
            known = ", ".join(sorted(e.name for e in engines)) or "none"
            raise ImproperlyConfigured(
                f"{key} names no engine of CONSOLE_ENGINES (engines: {known}; <NAME> is the "
                "engine name upper-cased, '-' as '_')"
            )
    for e in engines:
        suffix = env_suffix(e.name)
        if e.token and not TOKEN_RE.fullmatch(e.token):
            # Never the value itself: it is a secret.
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINE_TOKEN_{suffix}: the token must be printable ASCII with no "
                "leading or trailing space (gRPC can't send anything else)"
            )
        if e.tls_ca_file and not e.tls:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINE_TLS_CA_{suffix} is set but CONSOLE_ENGINE_TLS_{suffix} is not 1"
            )
        if e.tls_ca_file and not (
            os.path.isfile(e.tls_ca_file) and os.access(e.tls_ca_file, os.R_OK)
        ):
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINE_TLS_CA_{suffix}={e.tls_ca_file!r} is not a readable file"
            )


def parse_engines(environ: Mapping[str, str]) -> list[EngineConfig]:
    """Return the configured engines, in the order given; raise naming the bad part."""
    raw = environ.get("CONSOLE_ENGINES", "").strip()
    if not raw:
        _check_per_engine(environ, [])
        return []
    engines: list[EngineConfig] = []
    seen: dict[str, str] = {}
    addresses: dict[str, str] = {}  # lower-cased address -> engine name
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES={raw!r}: empty entry (stray comma?); expected name=host:port,..."
            )
        name, sep, address = part.partition("=")
        name, address = name.strip(), address.strip()
        if not sep:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r} has no '='; expected name=host:port"
            )
        if not NAME_RE.fullmatch(name):
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: engine name {name!r} must be 1-40 lower-case letters, "
                "digits, '-' or '_', starting with a letter or digit"
            )
        suffix = env_suffix(name)
        if suffix in seen:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: engine name {name!r} is given twice"
                if seen[suffix] == name
                else f"CONSOLE_ENGINES: {part!r}: engine names {seen[suffix]!r} and {name!r} "
                f"share the settings suffix {suffix!r}"
            )
        seen[suffix] = name
        _check_address(part, name, address)
        # One sidecar under two names: each of its instances listed and counted twice, its app
        # id claimed by both (children linked to either), and the sidecar read twice as often.
        if (other := addresses.setdefault(address.lower(), name)) != name:
            raise ImproperlyConfigured(
                f"CONSOLE_ENGINES: {part!r}: engines {other!r} and {name!r} have the same address "
                f"{address!r}: an engine is indexed under one name"
            )
        engines.append(
            EngineConfig(
                name=name,
                address=address,
                token=environ.get(f"CONSOLE_ENGINE_TOKEN_{suffix}", ""),
                tls=envbool(f"CONSOLE_ENGINE_TLS_{suffix}", False, environ),
                tls_ca_file=environ.get(f"CONSOLE_ENGINE_TLS_CA_{suffix}", ""),
            )
        )
    _check_per_engine(environ, engines)
    return engines
