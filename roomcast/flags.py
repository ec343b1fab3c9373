"""Command-line flags that also read ``ROOMCAST_*`` environment variables.

``--foo-bar`` falls back to ``ROOMCAST_FOO_BAR`` and then to its default; the flag wins. Only the
``__main__`` modules (the process edges) call this; components take frozen config objects.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = [
    "UNIT_WORDS",
    "EnvArgumentParser",
    "bind_failed",
    "configure_logging",
    "env_name",
    "flag_problems",
    "print_ready",
]


def env_name(flag: str) -> str:
    return "ROOMCAST_" + flag.lstrip("-").replace("-", "_").upper()


class EnvArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose long options default to their ``ROOMCAST_*`` variable."""

    def __init__(self, *args: Any, environ: Mapping[str, str] | None = None, **kw: Any) -> None:
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        # Set before super().__init__, which adds --help through add_argument.
        self._environ = os.environ if environ is None else environ
        super().__init__(*args, **kw)

    def add_argument(self, *names: Any, **kw: Any) -> argparse.Action:
        long = next((n for n in names if isinstance(n, str) and n.startswith("--")), None)
        if long is not None and long != "--help":
            var = env_name(long)
            kw["help"] = (kw.get("help") or "") + f" [env: {var}]"
            raw = self._environ.get(var)
            if raw is not None:
                if kw.get("action") == "append":
                    kw["default"] = [v for v in raw.split(",") if v]
                elif kw.get("action") == "store_true":
                    kw["default"] = raw.lower() in ("1", "true", "yes", "on")
                else:
                    conv = kw.get("type", str)
                    try:
                        kw["default"] = conv(raw)
                    except (TypeError, ValueError):
                        self.error(f"{var}={raw!r} is not valid for {long}")
        return super().add_argument(*names, **kw)


def configure_logging(level: str) -> None:
    """Every roomcast process logs the same way: to stderr, one line per record."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def print_ready(info: Mapping[str, Any]) -> None:
    """The one ``READY {json}`` line a process prints on stdout once it serves."""
    sys.stdout.write("READY " + json.dumps(info, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def bind_failed(prog: str, address: str, flag: str, reason: str) -> NoReturn:
    """A port or address a process needs is not its own: one line naming both, exit 2.

    Processes bind every port before they announce themselves to anyone, so nothing else has
    started when this runs."""
    sys.stderr.write(f"{prog}: cannot listen on {address} ({flag}): {reason}\n")
    sys.stderr.flush()
    raise SystemExit(2)


# What a numeric flag's help must name: the unit its number counts.
UNIT_WORDS = re.compile(
    r"\b(seconds?|bytes|messages|frames|count|port number|per second|ratio|clients|"
    r"connections|sockets|processes|rooms|runs)\b"
)
_ENV_SUFFIX = re.compile(r"\s*\[env: [A-Z0-9_]+\]$")


def flag_problems(parser: argparse.ArgumentParser, prog: str = "") -> list[str]:
    """Every flag of ``parser`` and its subcommands without a sentence of help, or (numeric
    flags) without a unit; and parsers whose help would not show the defaults. Empty: none."""
    prog = prog or parser.prog
    problems: list[str] = []
    formatter: Any = parser.formatter_class
    shows_defaults = isinstance(formatter, type) and issubclass(
        formatter, argparse.ArgumentDefaultsHelpFormatter
    )
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                problems += flag_problems(sub, f"{prog} {name}")
            continue
        if action.nargs == argparse.REMAINDER:
            continue  # passed on to another command's parser, checked there
        name = "/".join(action.option_strings) or str(action.metavar or action.dest)
        text = _ENV_SUFFIX.sub("", action.help or "") if action.help != argparse.SUPPRESS else ""
        if len(text.split()) < 2:
            problems.append(f"{prog} {name}: no help sentence")
            continue
        if action.type in (int, float) and not UNIT_WORDS.search(text):
            problems.append(f"{prog} {name}: numeric without a unit in its help")
        if action.option_strings and not (shows_defaults or "default" in text):
            problems.append(f"{prog} {name}: its default is not shown")
    return problems
