"""The ``roomcast`` command (architecture §3): component dispatch and the all-in-one dev cluster.

Owns the ``roomcast`` console script. ``roomcast router|gateway ...`` exec into
``python -m router|gateway ...`` with the remaining arguments: the SDK never imports the server
packages (the arrows point down), it only starts them as processes. ``roomcast dev``'s flags are
parsed here and its supervisor is :mod:`roomcast.dev` (imported only when it runs, so that
``roomcast dev --help`` needs nothing beyond the standard library).
``roomcast bench`` runs the scenarios of :mod:`roomcast.bench`; ``roomcast keygen`` writes CURVE
certificates (:mod:`roomcast.curve`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from roomcast.flags import EnvArgumentParser

__all__ = ["main"]

_COMPONENTS = ("router", "gateway")


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
            "Run a router, the given action workers and N gateways (development mode) on this "
            "machine, from the current directory. Prints one READY {json} line on stdout with "
            "every address, and on stderr the demo page URL and the children's output, each "
            "line prefixed with its name. A child that dies is reported and restarted (see "
            "--on-exit). SIGTERM, SIGINT (Ctrl-C) or SIGHUP stops everything."
        ),
    )
    d.add_argument("--gateways", type=int, default=2, help="gateways to run (count)")
    d.add_argument(
        "--port",
        type=int,
        default=8080,
        help="public port number of gateway 0; gateway i gets PORT+i and internal port "
        "PORT+1000+i; 0 picks free ports for everything",
    )
    d.add_argument("--host", default="127.0.0.1", help="the address gateways listen on")
    d.add_argument(
        "--router-port",
        type=int,
        default=5570,
        help="router commands port number (fanout +1, http +2); ignored with --port 0",
    )
    d.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="MODULE:APP",
        help="run `roomcast worker MODULE:APP` too, importing MODULE from the current "
        "directory (repeatable; comma-separated in the env)",
    )
    for hook, decorator in (("connect", "on_connect"), ("disconnect", "on_disconnect")):
        d.add_argument(
            f"--{hook}-hook",
            choices=("auto", "on", "off"),
            default="auto",
            help=f"gateways call the workers' {hook.upper()} / hook (@app.{decorator}); "
            f"auto: when a --worker app defines it",
        )
    d.add_argument(
        "--on-exit",
        choices=("restart", "keep", "stop"),
        default="restart",
        help="when a child dies: restart it on the same ports (after a pause that grows "
        "while it keeps dying), keep the rest running without it, or stop everything (exit 1)",
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
    from roomcast.dev import run

    return run(ns)


if __name__ == "__main__":
    # `python -m roomcast.cli ...` is `roomcast ...` in this interpreter (tests use it).
    sys.exit(main())
