"""What the benchmarks share: CPU time of a process, percentiles, free ports, and the sections they
append to bench/RESULTS.md (command, revision, machine, figures)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces: the fields we need come after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction 0.95 for p95); nan without values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def p95(values: list[float]) -> float:
    return percentile(values, 0.95)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def revision() -> str:
    """The commit measured, with -dirty when tracked files differ from it."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> str:
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def append_result(name: str, command: str, machine_line: str, body: str) -> None:
    """Appends one run's section to bench/RESULTS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = "" if RESULTS.exists() else "# Benchmark results\n"
    section = (
        f"{header}\n## {name}, {when}\n\n"
        f"Command: `{command}`  \nRevision: {revision()}  \nMachine: {machine_line}\n\n{body}\n"
    )
    with open(RESULTS, "a") as f:
        f.write(section)
