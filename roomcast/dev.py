"""``roomcast dev``'s supervisor: a local cluster of child processes (architecture §3).

Owns running a router, the action workers and N gateways on loopback as child processes of one
``roomcast dev`` process (its flags are parsed by :mod:`roomcast.cli`). The children start from
the caller's directory, so ``--worker myapp:app`` imports ``myapp`` from there (workers run as
:mod:`roomcast.devworker`, which also says which hooks the app defines). Dev reads each child's
``READY {json}`` line and prints one ``READY`` line of its own on stdout; everything else the
children write (stdout and stderr, a handler's ``print()`` included) goes to dev's stderr, one
line at a time, prefixed with the child's name (``[worker myapp:app] ...``).

Every way dev ends stops its children: SIGTERM, SIGINT and SIGHUP (a closed terminal) stop
them in order (gateways and workers first, the router last) within ``--drain-timeout`` + 5 s,
and each child asks the kernel for SIGTERM should dev itself die (``PR_SET_PDEATHSIG``, Linux).
A child that dies while dev runs is reported and, by default, restarted on the same ports
(``--on-exit restart``); ``keep`` leaves the rest running without it, ``stop`` ends everything
(exit 1). Gateways call the workers' ``@app.on_connect`` / ``@app.on_disconnect`` hooks when a
worker's app defines them (``--connect-hook`` / ``--disconnect-hook auto``).

It must not import the gateway or router packages: they run as processes.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from roomcast.flags import print_ready

__all__ = ["run"]

# How long children get beyond --drain-timeout before being killed (architecture §3).
_KILL_GRACE_S = 5.0
# A READY line carries a few addresses; anything longer is not one (and must not buffer forever).
_LINE_LIMIT = 1 << 20


def run(ns: argparse.Namespace) -> int:
    """Run the cluster ``ns`` (roomcast dev's parsed flags) describes; the exit status."""
    return asyncio.run(_Dev(ns).run())


class _Stopped(Exception):
    """SIGTERM/SIGINT/SIGHUP arrived: stop the children and exit 0."""


class _ChildFailed(Exception):
    """A child died or did not become ready: stop the rest and exit 1 (the text says why)."""


@dataclasses.dataclass(eq=False)
class _Child:
    name: str
    argv: list[str]
    last: bool  # stopped after the others: the router, which draining gateways still talk to
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, Any]] | None = None  # the READY json
    hooks: dict[str, bool] = dataclasses.field(default_factory=dict)  # a worker's HOOKS line
    pumps: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    started: float = 0.0
    pause: float = 0.0  # before the next restart


# A restarted child that dies again within this many seconds waits twice as long before the
# next restart (1 s first, at most _MAX_PAUSE_S).
_STABLE_S = 10.0
_MAX_PAUSE_S = 30.0


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _emit(text: str) -> None:
    # stderr may be a terminal that is gone (SIGHUP) or a closed pipe: never fail on it.
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _say(text: str) -> None:
    _emit(f"roomcast dev: {text}")


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when dev dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # dev died between fork and prctl
            os._exit(1)

    return hook


_PR_SET_PDEATHSIG = 1


def _fixed_ports(argv: list[str], info: dict[str, Any]) -> list[str]:
    """``argv`` with the ports a child really got (from its READY line) instead of port 0, so
    that a restart comes back where every peer and client expects it."""
    values = {
        "--commands": info.get("commands"),
        "--fanout": info.get("fanout"),
        "--http-port": _port_of(info.get("http")),
        "--port": _port_of(info.get("public")),
        "--internal-port": _port_of(info.get("internal")),
    }
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        value = values.get(arg)
        if value:
            out[i + 1] = value
    return out


def _port_of(url: object) -> str | None:
    if not isinstance(url, str) or ":" not in url:
        return None
    port = url.rstrip("/").rsplit(":", 1)[1]
    return port if port.isdigit() else None


class _Dev:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.children: list[_Child] = []
        self.stop = asyncio.Event()
        self._preexec = _die_with_parent_hook()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            # Repeated signals change nothing: supervisors such as timeout(1) deliver one to the
            # process and one to its group, so "a second Ctrl-C kills" would skip the drain.
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self._serve()
            return 0
        except _Stopped:
            return 0
        except _ChildFailed as exc:
            _say(f"{exc}; stopping")
            return 1
        finally:
            await self._stop_all()
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _serve(self) -> None:
        ns = self.ns
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ns.start_timeout
        py = sys.executable
        # Fixed, documented ports unless --port 0 asks for free ones everywhere.
        rp = ns.router_port if ns.port else 0
        router_argv = [py, "-m", "router", "--commands", f"tcp://127.0.0.1:{rp}"]
        router_argv += ["--fanout", f"tcp://127.0.0.1:{rp + 1 if rp else 0}"]
        router_argv += ["--http-port", str(rp + 2 if rp else 0)]
        router_argv += ["--drain-timeout", f"{ns.drain_timeout:g}"]
        router = await self._spawn(_Child("router", router_argv, last=True))
        (router_info,) = await self._ready([router], deadline)
        for key in ("commands", "fanout"):
            if not isinstance(router_info.get(key), str):
                raise _ChildFailed(f"router's READY line has no {key!r} address")
        # Workers before gateways: their apps say which hooks the gateways must call.
        workers = []
        for spec in ns.worker:
            argv = [py, "-m", "roomcast.devworker", spec, "--router", router_info["commands"]]
            workers.append(await self._spawn(_Child(f"worker {spec}", argv, last=False)))
        await self._ready(workers, deadline)
        hooks = {
            hook: choice == "on" or (choice == "auto" and any(w.hooks.get(hook) for w in workers))
            for hook, choice in (("connect", ns.connect_hook), ("disconnect", ns.disconnect_hook))
        }
        gateways = []
        for i in range(ns.gateways):
            argv = [py, "-m", "gateway", "--router", router_info["commands"]]
            argv += ["--fanout", router_info["fanout"], "--host", ns.host]
            argv += ["--port", str(ns.port + i if ns.port else 0)]
            argv += ["--internal-port", str(ns.port + 1000 + i if ns.port else 0)]
            argv += ["--env", "development", "--drain-timeout", f"{ns.drain_timeout:g}"]
            argv += [f"--{hook}-hook" for hook, on in hooks.items() if on]
            gateways.append(await self._spawn(_Child(f"gateway {i}", argv, last=False)))
        gateway_infos = await self._ready(gateways, deadline)
        print_ready({"router": router_info, "gateways": gateway_infos, "workers": len(workers)})
        public = str(gateway_infos[0].get("public", "?")).rstrip("/")
        called = " and ".join(f"@app.on_{h}" for h, on in hooks.items() if on) or "no hooks"
        _say(
            f"demo at {public}/ (router {router_info['commands']}, {len(gateways)} gateways, "
            f"{len(workers)} workers, {called}); Ctrl-C stops"
        )
        await self._watch()

    async def _spawn(self, child: _Child) -> _Child:
        loop = asyncio.get_running_loop()
        # print() in a handler shows up at once, not when a block buffer fills.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *child.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                # Own process group: a terminal's Ctrl-C reaches only us, and we stop the
                # children in order instead of all of them racing at once.
                process_group=0,
                preexec_fn=self._preexec,
                limit=_LINE_LIMIT,
            )
        except OSError as exc:
            raise _ChildFailed(f"cannot start {child.name}: {exc}") from None
        if child not in self.children:
            self.children.append(child)
        child.proc = proc
        child.started = loop.time()
        child.ready = loop.create_future()
        assert proc.stdout is not None and proc.stderr is not None
        child.pumps = [
            asyncio.create_task(self._pump_stdout(child, proc.stdout, child.ready)),
            asyncio.create_task(self._pump(child, proc.stderr)),
        ]
        return child

    async def _pump(self, child: _Child, stream: asyncio.StreamReader) -> None:
        """Every line of ``stream`` to our stderr, prefixed (and keep reading: a child writing
        to a full pipe would block forever)."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # over _LINE_LIMIT: readline dropped it
                continue
            if not line:
                return
            _emit(f"[{child.name}] " + line.decode("utf-8", "replace").rstrip("\r\n"))

    async def _pump_stdout(
        self, child: _Child, stream: asyncio.StreamReader, ready: asyncio.Future[dict[str, Any]]
    ) -> None:
        """Like _pump, but the first READY line (and a worker's HOOKS line) are ours."""
        while not ready.done():
            try:
                line = await stream.readline()
            except ValueError:
                continue
            if not line:
                return
            if line.startswith(b"HOOKS "):
                try:
                    hooks = json.loads(line[6:])
                except ValueError:
                    hooks = None
                if isinstance(hooks, dict):
                    child.hooks = {k: bool(v) for k, v in hooks.items()}
                continue
            if line.startswith(b"READY "):
                try:
                    info = json.loads(line[6:])
                except ValueError:
                    info = None
                if isinstance(info, dict):
                    ready.set_result(info)
                else:
                    ready.set_exception(
                        _ChildFailed(f"{child.name} printed a READY line that is not a json object")
                    )
                continue
            _emit(f"[{child.name}] " + line.decode("utf-8", "replace").rstrip("\r\n"))
        await self._pump(child, stream)

    async def _await_ready(self, child: _Child) -> dict[str, Any]:
        assert child.proc is not None and child.ready is not None
        exited = asyncio.ensure_future(child.proc.wait())
        waiting: set[asyncio.Future[Any]] = {child.ready, exited}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not child.ready.done():
            # Exited: a READY line it printed just before may still be in the pipe.
            await asyncio.wait(child.pumps[:1], timeout=1.0)
        if not child.ready.done():
            code = await child.proc.wait()
            raise _ChildFailed(f"{child.name} exited with {_status(code)} before it was ready")
        return child.ready.result()

    async def _ready(self, children: list[_Child], deadline: float) -> list[dict[str, Any]]:
        """Each child's READY json, in order; raises _Stopped, or _ChildFailed (death, time)."""
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._await_ready(c)) for c in children]
        stopper = asyncio.create_task(self.stop.wait())
        try:
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending:
                left = deadline - loop.time()
                if left <= 0:
                    late = ", ".join(
                        c.name for c, t in zip(children, tasks, strict=True) if t in pending
                    )
                    raise _ChildFailed(f"{late} not ready within {self.ns.start_timeout:g} s")
                done, _ = await asyncio.wait(
                    pending | {stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if stopper in done:
                    raise _Stopped
                for task in done:
                    task.result()
                pending -= done
            return [t.result() for t in tasks]
        finally:
            for task in (*tasks, stopper):
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)

    async def _watch(self) -> None:
        """Until a signal (return); a child's death is handled as --on-exit says."""
        exits: dict[asyncio.Future[Any], _Child] = {}
        for child in self.children:
            assert child.proc is not None
            exits[asyncio.ensure_future(child.proc.wait())] = child
        restarts: dict[asyncio.Future[Any], _Child] = {}
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {stopper, *exits, *restarts}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                for task in done:
                    if task in restarts:
                        child = restarts.pop(task)
                        if task.result() and child.proc is not None:
                            exits[asyncio.ensure_future(child.proc.wait())] = child
                        continue
                    child = exits.pop(task)
                    what = f"{child.name} exited with {_status(task.result())}"
                    if self.ns.on_exit == "stop":
                        raise _ChildFailed(what)
                    if self.ns.on_exit == "keep":
                        _say(f"{what}; the others keep running (--on-exit keep)")
                        continue
                    _say(f"{what}; restarting it (--on-exit restart)")
                    restarts[asyncio.ensure_future(self._restart(child))] = child
        finally:
            waits: list[asyncio.Future[Any]] = [stopper, *exits, *restarts]
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _restart(self, child: _Child) -> bool:
        """Start ``child`` again on the ports it had, until it is ready (True) or we stop."""
        loop = asyncio.get_running_loop()
        assert child.ready is not None
        if child.ready.done() and not child.ready.exception():
            child.argv = _fixed_ports(child.argv, child.ready.result())
        while True:
            lived = loop.time() - child.started
            child.pause = (
                1.0 if lived >= _STABLE_S else min(max(child.pause, 0.5) * 2, _MAX_PAUSE_S)
            )
            try:
                await asyncio.wait_for(self.stop.wait(), child.pause)
                return False
            except TimeoutError:
                pass
            await self._end_pumps(child)
            try:
                await self._spawn(child)
                deadline = loop.time() + self.ns.start_timeout
                await self._ready([child], deadline)
            except _Stopped:
                return False
            except _ChildFailed as exc:
                _say(f"{exc}; trying again")
                if child.proc is not None and child.proc.returncode is None:
                    child.proc.kill()
                    await child.proc.wait()
                continue
            _say(f"{child.name} restarted")
            return True

    async def _end_pumps(self, child: _Child) -> None:
        if child.pumps:
            # The pipes hit EOF as the child exits; a stray grandchild holding one must not
            # keep us here.
            _, late = await asyncio.wait(child.pumps, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*child.pumps, return_exceptions=True)
            child.pumps = []

    async def _stop_all(self) -> None:
        loop = asyncio.get_running_loop()
        start, drain = loop.time(), self.ns.drain_timeout
        # Everything is down by drain + 5 s; the router keeps the last second even when
        # gateways use their whole grace.
        await self._stop(
            [c for c in self.children if not c.last],
            start + drain + _KILL_GRACE_S - 1 - loop.time(),
        )
        await self._stop(
            [c for c in self.children if c.last], start + drain + _KILL_GRACE_S - loop.time()
        )
        for child in self.children:
            await self._end_pumps(child)

    async def _stop(self, children: Iterable[_Child], timeout: float) -> None:
        alive = [c for c in children if c.proc is not None and c.proc.returncode is None]
        for child in alive:
            assert child.proc is not None
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not alive:
            return
        waits = {asyncio.create_task(c.proc.wait()): c for c in alive if c.proc is not None}
        _, late = await asyncio.wait(waits, timeout=max(timeout, 0.0))
        for task in late:
            child = waits[task]
            _say(f"{child.name} did not stop in time; killing it")
            try:
                assert child.proc is not None
                child.proc.kill()
            except ProcessLookupError:
                pass
        codes = await asyncio.gather(*waits)
        killed = {waits[t].name for t in late}
        for child, code in zip(waits.values(), codes, strict=True):
            if code != 0 and child.name not in killed:
                _say(f"{child.name} exited with {_status(code)}")


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
