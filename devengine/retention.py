"""The workflow state retention policy, as a Dapr app's Configuration sets it for daprd
(``spec.workflow.stateRetentionPolicy``): how long a workflow that reached a terminal state keeps
its state and history before the engine purges it.

Each of ``anyTerminal``, ``completed``, ``failed`` and ``terminated`` takes a Go duration
(``72h``, ``30m``, ``1h30m``, ``0s``); the duration of the state a workflow ended in wins over
``anyTerminal``. A state with neither is kept for good, as is everything without a policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devengine import protos as p

# The units of Go's time.ParseDuration, in nanoseconds (it takes both spellings of micro).
GO_UNITS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
# One number and its unit: "90m", "1.5h", ".5s". The longest units come first in the choice so
# that "ms" is not read as "m" followed by "s". Only ASCII digits, as Go reads them: \d would
# also take the digits of other scripts, which int() reads.
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
# Go's time.Duration is an int64 of nanoseconds (about 292 years).
MAX_DURATION_NS = 2**63 - 1

STATES = ("anyTerminal", "completed", "failed", "terminated")
EXAMPLE = "e.g. completed=2h,failed=24h"


def parse_go_duration(text: str) -> int:
    """Nanoseconds from a Go duration string, as time.ParseDuration reads it, negative ones
    refused (a retention can't end before the workflow did). ValueError says why."""
    rest = text.strip()
    negative = rest.startswith("-")
    if rest.startswith(("+", "-")):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"{text!r} is not a Go duration (e.g. 72h, 30m, 1h30m, 0s)")
    total = 0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None or not (match[1] or match[2]):
            raise ValueError(f"{text!r} is not a Go duration (e.g. 72h, 30m, 1h30m, 0s)")
        whole, fraction, unit = match[1] or "0", match[2] or "", match[3]
        scale = GO_UNITS[unit]
        total += int(whole) * scale + int(fraction or "0") * scale // 10 ** len(fraction)
        pos = match.end()
    if negative and total:
        raise ValueError(f"{text!r} is negative")
    if total > MAX_DURATION_NS:
        raise ValueError(f"{text!r} is longer than a Go duration can be (about 292 years)")
    return total


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a finished workflow is kept, in nanoseconds, per terminal state (None: for
    good unless ``any_terminal`` says otherwise)."""

    any_terminal: int | None = None
    completed: int | None = None
    failed: int | None = None
    terminated: int | None = None

    def keep_ns(self, status: int) -> int | None:
        """How long a workflow that ended in ``status`` is kept; None: for good. As daprd, the
        state's own duration first, then anyTerminal (the only one for a canceled workflow)."""
        own: dict[int, int | None] = {
            p.COMPLETED: self.completed,
            p.FAILED: self.failed,
            p.TERMINATED: self.terminated,
        }
        kept = own.get(status)
        return kept if kept is not None else self.any_terminal

    def describe(self) -> str:
        """For the start-up log: "completed 2h, failed 24h"."""
        parts = []
        for state, ns in zip(STATES, self._durations(), strict=True):
            if ns is not None:
                parts.append(f"{state} {_readable(ns)}")
        return ", ".join(parts)

    def _durations(self) -> tuple[int | None, ...]:
        return (self.any_terminal, self.completed, self.failed, self.terminated)


def _readable(ns: int) -> str:
    seconds = ns / 10**9
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def parse_retention(values: list[str]) -> RetentionPolicy | None:
    """The policy from ``STATE=DURATION`` items, each value holding one or several separated by
    commas (``completed=2h,failed=24h``); None when there are none (nothing is ever purged).
    ValueError names the bad part."""
    given: dict[str, int] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, duration = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not STATE=DURATION ({EXAMPLE})")
            state = _state_named(key.strip())
            if state in given:
                raise ValueError(f"{state} is given twice")
            try:
                given[state] = parse_go_duration(duration)
            except ValueError as e:
                raise ValueError(f"{state}: {e}") from None
    if not given:
        return None
    return RetentionPolicy(
        any_terminal=given.get("anyTerminal"),
        completed=given.get("completed"),
        failed=given.get("failed"),
        terminated=given.get("terminated"),
    )


def _state_named(key: str) -> str:
    # daprd reads the Configuration's JSON keys without regard to case, and so does this.
    for state in STATES:
        if key.lower() == state.lower():
            return state
    raise ValueError(
        f"{key!r} is not a terminal state of the retention policy "
        "(anyTerminal, completed, failed or terminated)"
    )
