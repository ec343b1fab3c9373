"""The bench's child processes: servers (router, gateways, baseline) and load agents.

Owns starting ``sys.executable -m <module>`` children (optionally under ``-m cProfile``), reading
their ``READY {json}`` line, keeping their stderr in log files, talking JSON lines to agents,
sampling ``/proc/<pid>`` (CPU user+sys, RSS, peak RSS), raising ``RLIMIT_NOFILE`` (children
inherit it), and stopping everything: SIGTERM, a bounded wait, then SIGKILL.

Every child gets its own process group, so a terminal's Ctrl-C reaches only the bench, which
then stops its children in order (agents, gateways, router last). Does not import the gateway or
the router: they are only ever processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import resource
import signal
import sys
import time
from collections.abc import Iterable
from typing import IO, Any, ClassVar

from roomcast.bench.common import BenchError

__all__ = [
    "Agent",
    "Child",
    "Fleet",
    "RoomcastServers",
    "cpu_times",
    "machine_busy_s",
    "memory_kib",
    "raise_fd_limit",
    "reset_peak",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LINE_LIMIT = 256 * 1024 * 1024  # agents answer `collect` with every latency sample on one line
_STOP_GRACE_S = 10.0
_EOF_GRACE_S = 5.0
_NOTABLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
_DRAIN_S = 1.0  # --drain-timeout given to the servers: the bench closes its clients first


# --- /proc ---------------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float, float]:
    """(user, system, total) CPU seconds of a live process (every thread); zeros once gone.

    user/system come from ``/proc/<pid>/stat`` in clock ticks (10 ms); total comes from the
    process's CPU-time clock (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``, nanoseconds), so
    short phases are measured precisely.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0, 0.0, 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    user, system = int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK
    try:
        total = time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        total = user + system
    return user, system, total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle since boot (``/proc/stat``, all CPUs)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    ticks = [int(v) for v in fields]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / _CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) in KiB; empty once the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def reset_peak(pid: int) -> bool:
    """Reset the peak-RSS mark to the current RSS (``clear_refs`` 5, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft open-files limit to the hard one; children started later inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or (hard == resource.RLIM_INFINITY and soft != hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- children ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Child:
    name: str
    role: str  # "router", "gateway", "baseline", "agent": the order in which they stop
    proc: asyncio.subprocess.Process
    log_path: pathlib.Path
    log_file: IO[bytes]
    profile_path: pathlib.Path | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def notable_log_lines(self, limit: int = 10) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line[:300] for line in text.splitlines() if _NOTABLE.search(line)][:limit]

    def died(self, what: str) -> BenchError:
        code = self.proc.returncode
        tail = self.log_tail()
        status = "still running" if code is None else f"exit status {code}"
        return BenchError(
            f"{self.name} {what} ({status}); log {self.log_path}" + (f":\n{tail}" if tail else "")
        )

    async def read_ready(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        await self.proc.wait()
                        raise self.died("exited before it was ready")
                    if line.startswith(b"READY "):
                        info = json.loads(line[6:])
                        if not isinstance(info, dict):
                            raise self.died("printed a READY line that is not a json object")
                        self.info = info
                        return info
        except TimeoutError:
            raise self.died(f"was not ready within {timeout:g} s") from None

    async def stop(self, timeout: float = _STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit status.

        An agent is first told by EOF on its stdin (then it exits 0 by itself); a SIGTERM racing
        with that exit could find its handler already gone.
        """
        if self.proc.stdin is not None and self.proc.returncode is None:
            self.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), _EOF_GRACE_S)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain, 1.0)
        self.log_file.close()
        return self.proc.returncode


class Agent(Child):
    """A load agent (``python -m roomcast.bench.agent``): one JSON command in, one answer out."""

    async def call(self, cmd: str, wait: float, /, **args: Any) -> dict[str, Any]:
        """Send ``cmd`` with ``args`` and return the answer; ``wait`` bounds the bench's wait."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.returncode is not None:
            raise self.died(f"is gone (asked {cmd!r})")
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        try:
            async with asyncio.timeout(wait):
                await self.proc.stdin.drain()
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise self.died(f"did not answer {cmd!r} within {wait:g} s") from None
        except (ConnectionError, BrokenPipeError):
            raise self.died(f"went away while asked {cmd!r}") from None
        if not line:
            await self.proc.wait()
            raise self.died(f"exited while asked {cmd!r}")
        answer = json.loads(line)
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise BenchError(f"{self.name}: {cmd} failed: {error}")
        return answer


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


class Fleet:
    """Every child of one bench phase; :meth:`close` stops them all (agents first, router last)."""

    _ORDER = {"agent": 0, "baseline": 1, "gateway": 1, "router": 2}

    # The first WARNING/ERROR/Traceback lines each child of any fleet logged (servers log at
    # WARNING), by "<tag>/<name>": the bench reports them and keeps the logs when there are any.
    notable: ClassVar[dict[str, list[str]]] = {}

    def __init__(
        self, log_dir: pathlib.Path, profile_dir: pathlib.Path | None, tag: str = "roomcast"
    ) -> None:
        self.log_dir = log_dir
        self.profile_dir = profile_dir
        self.tag = tag
        self.children: list[Child] = []
        self.exit_codes: dict[str, int | None] = {}

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _spawn(
        self, name: str, role: str, module: str, args: Iterable[str], *, agent: bool
    ) -> Child:
        py = sys.executable
        argv = [py, "-m", module, *args]
        profile_path = None
        if self.profile_dir is not None and not agent:
            profile_path = self.profile_dir / f"{name}.prof"
            argv = [py, "-m", "cProfile", "-o", str(profile_path), "-m", module, *args]
        log_path = self.log_dir / f"{self.tag}-{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 (closed by Child.stop)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if agent else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                process_group=0,
                limit=_LINE_LIMIT,
            )
        except OSError as exc:
            log_file.close()
            raise BenchError(f"cannot start {name}: {exc}") from None
        cls = Agent if agent else Child
        child = cls(name, role, proc, log_path, log_file, profile_path)
        self.children.append(child)
        return child

    async def server(
        self, name: str, role: str, module: str, args: Iterable[str], timeout: float
    ) -> Child:
        child = await self._spawn(name, role, module, args, agent=False)
        await child.read_ready(timeout)
        assert child.proc.stdout is not None
        child.drain = asyncio.create_task(_discard(child.proc.stdout))
        return child

    async def agents(self, names: list[str], timeout: float) -> list[Agent]:
        children = [
            await self._spawn(n, "agent", "roomcast.bench.agent", [], agent=True) for n in names
        ]
        await asyncio.gather(*(c.read_ready(timeout) for c in children))
        return [c for c in children if isinstance(c, Agent)]

    async def roomcast(self, gateways: int, timeout: float) -> RoomcastServers:
        drain = ["--drain-timeout", f"{_DRAIN_S:g}", "--log-level", "WARNING"]
        http = ["--http-port", "0"]
        router = await self.server(
            "router",
            "router",
            "router",
            ["--commands", "tcp://127.0.0.1:0", "--fanout", "tcp://127.0.0.1:0", *http, *drain],
            timeout,
        )
        for key in ("commands", "fanout"):
            if not isinstance(router.info.get(key), str):
                raise router.died(f"printed no {key!r} address")
        args = ["--router", router.info["commands"], "--fanout", router.info["fanout"]]
        args += ["--host", "127.0.0.1", "--port", "0", "--internal-port", "0"]
        args += ["--env", "development", *drain]
        spawned = [
            await self._spawn(f"gateway-{i}", "gateway", "gateway", args, agent=False)
            for i in range(gateways)
        ]
        await asyncio.gather(*(g.read_ready(timeout) for g in spawned))
        for g in spawned:
            assert g.proc.stdout is not None
            g.drain = asyncio.create_task(_discard(g.proc.stdout))
        return RoomcastServers(router, spawned)

    async def baseline(self, timeout: float) -> Child:
        return await self.server(
            "baseline",
            "baseline",
            "roomcast.bench.baseline",
            ["--host", "127.0.0.1", "--port", "0"],
            timeout,
        )

    def servers(self) -> list[Child]:
        return [c for c in self.children if c.role != "agent"]

    def agents_alive(self) -> list[Agent]:
        return [c for c in self.children if isinstance(c, Agent)]

    def check_alive(self) -> None:
        for child in self.children:
            if child.proc.returncode is not None:
                raise child.died("died during the run")

    async def close(self) -> None:
        for rank in sorted(set(self._ORDER.values())):
            group = [c for c in self.children if self._ORDER[c.role] == rank]
            codes = await asyncio.gather(*(c.stop() for c in group), return_exceptions=True)
            for child, code in zip(group, codes, strict=True):
                self.exit_codes[child.name] = code if isinstance(code, int) else None
                lines = child.notable_log_lines()
                if lines:
                    Fleet.notable[f"{self.tag}/{child.name}"] = lines
        self.children.clear()


@dataclasses.dataclass
class RoomcastServers:
    router: Child
    gateways: list[Child]

    def ws_urls(self) -> list[str]:
        return [str(g.info["public"]).replace("http://", "ws://", 1) + "/ws" for g in self.gateways]

    @property
    def commands(self) -> str:
        return str(self.router.info["commands"])

    @property
    def all(self) -> list[Child]:
        return [self.router, *self.gateways]
