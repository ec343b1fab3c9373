"""The ``roomcast`` command (DESIGN.md §3): component dispatch and the all-in-one dev cluster.

Owns the ``roomcast`` console script. ``roomcast router|gateway ...`` exec into
``python -m router|gateway ...`` with the remaining arguments: the SDK never imports the server
packages (the arrows point down), it only starts them as processes. ``roomcast dev`` supervises
a router, N gateways and the action workers on loopback as child processes: it reads each
child's ``READY {json}`` line (children's stdout is not passed through; their stderr is
inherited), prints one ``READY`` line of its own, and on SIGTERM/SIGINT stops them in order
(gateways and workers first, the router last) within ``--drain-timeout`` + 5 s.
``roomcast bench`` runs the scenarios of :mod:`roomcast.bench`; ``roomcast keygen`` writes CURVE
certificates (:mod:`roomcast.curve`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from roomcast.flags import EnvArgumentParser, print_ready

__all__ = ["main"]

_COMPONENTS = ("router", "gateway")

# How long children get beyond --drain-timeout before being killed (DESIGN.md §3).
_KILL_GRACE_S = 5.0
# A READY line carries a few addresses; anything longer is not one (and must not buffer forever).
_LINE_LIMIT = 1 << 20


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``roomcast`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _COMPONENTS:
        # Before argparse, so that `roomcast gateway --help` is the gateway's own help.
        _exec_component(args[0], args[1:])
    if args and args[0] == "worker":
        from roomcast.worker import main as worker_main

        return worker_main(args[1:])
    if args and args[0] == "keygen":
        from roomcast.curve import main as curve_main

        return curve_main(args, prog="roomcast")
    parser = _parser()
    ns, extra = parser.parse_known_args(args)
    if extra and ns.command != "bench":
        parser.error("unrecognized arguments: " + " ".join(extra))
    status: int = ns.handler(ns)
    return status


def _exec_component(name: str, args: Sequence[str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", name, *args])


def _parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="roomcast",
        description="roomcast: a realtime pub/sub cluster with the Sails.js sockets API.",
    )
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    for name in _COMPONENTS:
        p = sub.add_parser(
            name,
            add_help=False,
            help=f"run the {name} (exec python -m {name}; see `roomcast {name} --help`)",
        )
        p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(handler=lambda ns, name=name: _exec_component(name, ns.args))

    w = sub.add_parser(
        "worker",
        add_help=False,
        help="serve a roomcast.App's actions (see `roomcast worker --help`)",
    )
    w.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    sub.add_parser(
        "keygen",
        add_help=False,
        help="write CURVE certificates (see `roomcast keygen --help`)",
    )

    b = sub.add_parser(
        "bench",
        add_help=False,
        # No option prefix: every argument, options first included, reaches `roomcast bench`'s
        # own parser (see `roomcast bench --help`), none is left over as unrecognized here.
        prefix_chars="\x00",
        help="benchmark scenarios on loopback (see `roomcast bench --help`)",
    )
    b.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    b.set_defaults(handler=_bench)

    d = sub.add_parser(
        "dev",
        help="run a local cluster: a router, N gateways and workers on loopback",
        description=(
            "Run a router and N gateways (development mode) and the given action workers on "
            "this machine. Prints one READY {json} line on stdout with every address, and a "
            "hint with the demo page URL on stderr. SIGTERM or Ctrl-C stops everything."
        ),
    )
    d.add_argument("--gateways", type=int, default=2, help="how many gateways to run")
    d.add_argument(
        "--port",
        type=int,
        default=8080,
        help="public port of gateway 0; gateway i gets PORT+i and internal port PORT+1000+i; "
        "0 picks free ports for everything",
    )
    d.add_argument("--host", default="127.0.0.1", help="the address gateways listen on")
    d.add_argument(
        "--router-port",
        type=int,
        default=5570,
        help="router commands port (fanout +1, http +2); ignored with --port 0",
    )
    d.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="MODULE:APP",
        help="run `roomcast worker MODULE:APP` too (repeatable; comma-separated in the env)",
    )
    d.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="seconds gateways get to drain on shutdown (then 5 more before a kill)",
    )
    d.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds every child gets to print its READY line",
    )
    d.set_defaults(handler=_dev, parser=d)
    return parser


def _bench(ns: argparse.Namespace) -> int:
    from roomcast.bench import main as bench_main

    return bench_main(ns.args)


# -- roomcast dev -----------------------------------------------------------------------------


class _Stopped(Exception):
    """SIGTERM/SIGINT arrived: stop the children and exit 0."""


class _ChildFailed(Exception):
    """A child died or did not become ready: stop the rest and exit 1 (the text says why)."""


@dataclasses.dataclass
class _Child:
    name: str
    last: bool  # stopped after the others: the router, which draining gateways still talk to
    proc: asyncio.subprocess.Process
    drain: asyncio.Task[None] | None = None


def _dev(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    if ns.gateways < 1:
        parser.error("--gateways must be at least 1")
    if ns.port != 0 and not 0 < ns.port <= 65536 - ns.gateways:
        parser.error(f"--port must be 0 or leave room for {ns.gateways} ports below 65536")
    if ns.drain_timeout < 0 or ns.start_timeout <= 0:
        parser.error("--drain-timeout must be >= 0 and --start-timeout > 0")
    for spec in ns.worker:
        if spec.count(":") != 1 or not all(spec.split(":")):
            parser.error(f"--worker {spec!r} is not MODULE:APP")
    return asyncio.run(_Dev(ns).run())


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _say(text: str) -> None:
    print(f"roomcast dev: {text}", file=sys.stderr, flush=True)


async def _discard(stream: asyncio.StreamReader) -> None:
    # Keep reading after READY: a child writing to a full pipe would block forever.
    while await stream.read(65536):
        pass


class _Dev:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.children: list[_Child] = []
        self.stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
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
            for sig in (signal.SIGTERM, signal.SIGINT):
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
        router = await self._spawn("router", router_argv, last=True)
        (router_info,) = await self._ready([router], deadline)
        for key in ("commands", "fanout"):
            if not isinstance(router_info.get(key), str):
                raise _ChildFailed(f"router's READY line has no {key!r} address")
        gateways = []
        for i in range(ns.gateways):
            argv = [py, "-m", "gateway", "--router", router_info["commands"]]
            argv += ["--fanout", router_info["fanout"], "--host", ns.host]
            argv += ["--port", str(ns.port + i if ns.port else 0)]
            argv += ["--internal-port", str(ns.port + 1000 + i if ns.port else 0)]
            argv += ["--env", "development", "--drain-timeout", f"{ns.drain_timeout:g}"]
            if ns.worker:
                # Workers may serve afterDisconnect (DISCONNECT /); the demo keeps counts with it.
                argv += ["--disconnect-hook"]
            gateways.append(await self._spawn(f"gateway {i}", argv))
        workers = []
        for spec in ns.worker:
            argv = [py, "-m", "roomcast.cli", "worker", spec, "--router", router_info["commands"]]
            workers.append(await self._spawn(f"worker {spec}", argv))
        infos = await self._ready(gateways + workers, deadline)
        gateway_infos = infos[: len(gateways)]
        print_ready({"router": router_info, "gateways": gateway_infos, "workers": len(workers)})
        public = str(gateway_infos[0].get("public", "?")).rstrip("/")
        _say(
            f"demo at {public}/ (router {router_info['commands']}, {len(gateways)} gateways, "
            f"{len(workers)} workers); Ctrl-C stops"
        )
        await self._watch()

    async def _spawn(self, name: str, argv: list[str], *, last: bool = False) -> _Child:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                # Own process group: a terminal's Ctrl-C reaches only us, and we stop the
                # children in order instead of all of them racing at once.
                process_group=0,
                limit=_LINE_LIMIT,
            )
        except OSError as exc:
            raise _ChildFailed(f"cannot start {name}: {exc}") from None
        child = _Child(name, last, proc)
        self.children.append(child)
        return child

    async def _ready(self, children: list[_Child], deadline: float) -> list[dict[str, Any]]:
        """Each child's READY json, in order; raises _Stopped, or _ChildFailed (death, time)."""
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._read_ready(c)) for c in children]
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

    async def _read_ready(self, child: _Child) -> dict[str, Any]:
        stdout = child.proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # over _LINE_LIMIT: not a READY line; readline dropped it
                continue
            if not line:
                code = await child.proc.wait()
                raise _ChildFailed(f"{child.name} exited with {_status(code)} before it was ready")
            if not line.startswith(b"READY "):
                continue
            try:
                info = json.loads(line[6:])
            except ValueError:
                info = None
            if not isinstance(info, dict):
                raise _ChildFailed(f"{child.name} printed a READY line that is not a json object")
            child.drain = asyncio.create_task(_discard(stdout))
            return info

    async def _watch(self) -> None:
        """Until a signal (return) or the death of any child (_ChildFailed)."""
        waits = {asyncio.create_task(c.proc.wait()): c for c in self.children}
        stopper = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*waits, stopper):
                task.cancel()
            await asyncio.gather(*waits, stopper, return_exceptions=True)
        if stopper in done:
            return
        task = next(t for t in waits if t in done)
        raise _ChildFailed(f"{waits[task].name} exited with {_status(task.result())}")

    async def _stop_all(self) -> None:
        loop = asyncio.get_running_loop()
        start, drain = loop.time(), self.ns.drain_timeout
        # Everything is down by drain + 5 s (DESIGN.md §3); the router keeps the last second
        # even when gateways use their whole grace.
        await self._stop(
            [c for c in self.children if not c.last],
            start + drain + _KILL_GRACE_S - 1 - loop.time(),
        )
        await self._stop(
            [c for c in self.children if c.last], start + drain + _KILL_GRACE_S - loop.time()
        )
        drains = [c.drain for c in self.children if c.drain is not None]
        if drains:
            # The pipes hit EOF as the children exit; a stray grandchild holding one must not
            # keep us here.
            _, late = await asyncio.wait(drains, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)

    async def _stop(self, children: Iterable[_Child], timeout: float) -> None:
        alive = [c for c in children if c.proc.returncode is None]
        for child in alive:
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not alive:
            return
        waits = {asyncio.create_task(c.proc.wait()): c for c in alive}
        _, late = await asyncio.wait(waits, timeout=max(timeout, 0.0))
        for task in late:
            child = waits[task]
            _say(f"{child.name} did not stop in time; killing it")
            try:
                child.proc.kill()
            except ProcessLookupError:
                pass
        codes = await asyncio.gather(*waits)
        killed = {waits[t].name for t in late}
        for child, code in zip(waits.values(), codes, strict=True):
            if code != 0 and child.name not in killed:
                _say(f"{child.name} exited with {_status(code)}")


if __name__ == "__main__":
    # `python -m roomcast.cli` is how `roomcast dev` starts workers in the same interpreter.
    sys.exit(main())
