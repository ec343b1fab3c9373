"""Command-line flags that also read ``ROOMCAST_*`` environment variables.

``--foo-bar`` falls back to ``ROOMCAST_FOO_BAR`` and then to its default; the flag wins. Only the
``__main__`` modules (the process edges) call this; components take frozen config objects.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["EnvArgumentParser", "configure_logging", "env_name", "print_ready"]


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
