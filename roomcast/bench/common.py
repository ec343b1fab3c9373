"""Small shared pieces of the bench: its error, options, percentiles, progress lines, machine facts.

Pure helpers apart from :class:`Progress` (writes to stderr), :func:`machine` (reads /proc) and
:func:`revision` (asks git which commit the servers run); no sockets here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BenchError",
    "Options",
    "Progress",
    "latency_summary",
    "machine",
    "padding_for",
    "percentile",
    "ratio",
    "revision",
]


class BenchError(Exception):
    """The bench could not run (a process died, a wait timed out): exit status 1, message shown."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Knobs every scenario shares (flags of ``roomcast bench``)."""

    gateways: int = 2
    client_procs: int = 2
    payload_bytes: int = 100  # size of each push's JSON data
    sample_every: int = 10  # 1 client in this many records the latency of every push it gets
    phase_timeout_s: float = 300.0  # bound of any one phase (connect, burst, rate run)
    stall_s: float = 5.0  # a phase ends early when nothing arrives for this long
    profile_dir: str | None = None
    progress: bool = True


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return float(sorted_values[rank - 1])


def latency_summary(latencies_ns: list[int]) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds of nanosecond samples."""
    values = sorted(latencies_ns)
    ms = 1e6
    return {
        "samples": len(values),
        "p50_ms": round(percentile(values, 50) / ms, 3),
        "p95_ms": round(percentile(values, 95) / ms, 3),
        "p99_ms": round(percentile(values, 99) / ms, 3),
        "max_ms": round((values[-1] if values else 0) / ms, 3),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def padding_for(payload_bytes: int) -> str:
    """Filler so that ``{"t":<19 digits>,"s":<seq>,"p":"..."}`` is about ``payload_bytes``."""
    return "x" * max(0, payload_bytes - 40)


def revision() -> dict[str, Any]:
    """The git commit of the code the servers run (this checkout), and whether it is modified."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": head, "modified_files": len(dirty)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else at most every 2 s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._dirty = False

    def say(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text)
            self._dirty = True
        elif force or now - self._last >= 2.0:
            sys.stderr.write(text + "\n")
            self._last = now
        else:
            return
        sys.stderr.flush()

    def done(self, text: str) -> None:
        """A line that stays (phase result)."""
        if not self.enabled:
            return
        if self.tty and self._dirty:
            sys.stderr.write("\r\x1b[2K")
            self._dirty = False
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
