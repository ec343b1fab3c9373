"""The pure core stays pure: no I/O or event-loop modules, no clock reads, one owner of the wire.

Imports are checked for real in a fresh interpreter (``sys.modules`` after importing every module
under ``roomcast/core`` and ``roomcast`` itself, whose ``__init__`` is lazy). Clock reads cannot be
checked that way (``time`` is always loaded by the interpreter), so the sources are read instead.
To hold another pure module to these rules (a client-protocol codec, session state), add its
source file to ``PURE_SOURCES``.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import TIMEOUT_UNIT

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = ROOT / "roomcast" / "core"
PB = CORE / "pb"
WIRE = CORE / "wire.py"

FORBIDDEN_MODULES = ("zmq", "tornado", "asyncio", "socket", "prometheus_client")
# Clock-reading calls, as dotted names (after resolving `import x as y` aliases).
CLOCK_CALLS = {
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.monotonic_ns",
    "time.perf_counter",
    "time.perf_counter_ns",
    "time.process_time",
    "time.localtime",
    "time.gmtime",
    "time.ctime",
    "time.sleep",
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
}
BANNED_IMPORTS = {"time", *FORBIDDEN_MODULES}


def _core_sources() -> list[pathlib.Path]:
    return sorted(p for p in CORE.rglob("*.py") if PB not in p.parents)


PURE_SOURCES: list[pathlib.Path] = [
    *_core_sources(),
    ROOT / "router" / "queries.py",  # split out of the router's shell: must stay socket-free
]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_sources_found() -> None:
    names = {p.name for p in PURE_SOURCES}
    assert {"__init__.py", "wire.py", "topology.py", "errors.py", "rooms.py"} <= names


def test_importing_the_core_loads_no_io_modules() -> None:
    modules = ["roomcast", *sorted({_module_name(p) for p in CORE.rglob("*.py")})]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30 * TIMEOUT_UNIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {modules} loaded {loaded}"


# --- source scan ---------------------------------------------------------------------------------


def find_violations(source: str, *, may_import_pb: bool) -> list[str]:
    """Banned imports, clock reads and pb imports in one module's source."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> dotted module/attribute it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BANNED_IMPORTS:
                    found.append(f"line {node.lineno}: import {a.name}")
                if a.name.startswith("roomcast.core.pb") and not may_import_pb:
                    found.append(f"line {node.lineno}: import {a.name}")
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] in BANNED_IMPORTS:
                found.append(f"line {node.lineno}: from {module} import ...")
            names = {a.name for a in node.names}
            absolute_pb = node.level == 0 and (
                module.startswith("roomcast.core.pb")
                or (module == "roomcast.core" and "pb" in names)
            )
            relative_pb = node.level > 0 and (
                module.split(".")[0] == "pb" or (not module and "pb" in names)
            )
            if (absolute_pb or relative_pb) and not may_import_pb:
                found.append(f"line {node.lineno}: imports roomcast.core.pb")
            if node.level == 0:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            dotted = _dotted(node.func, aliases)
            if dotted in CLOCK_CALLS:
                found.append(f"line {node.lineno}: clock read {dotted}()")
    return found


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


@pytest.mark.parametrize("path", PURE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_source_is_clean(path: pathlib.Path) -> None:
    violations = find_violations(path.read_text(encoding="utf-8"), may_import_pb=path == WIRE)
    assert violations == [], f"{path.relative_to(ROOT)}: {violations}"


# The scanner itself: each snippet must be caught (or pass), so the test above is not vacuous.
@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import time", True),
        ("import time as t\nt.monotonic()", True),
        ("from time import monotonic\nmonotonic()", True),
        ("from time import perf_counter as pc\npc()", True),
        ("import datetime\ndatetime.datetime.now()", True),
        ("from datetime import datetime\ndatetime.now()", True),
        ("from datetime import datetime as dt\ndt.utcnow()", True),
        ("from datetime import date\ndate.today()", True),
        ("import asyncio", True),
        ("import socket", True),
        ("from zmq import asyncio", True),
        ("import tornado.ioloop", True),
        ("import prometheus_client", True),
        ("from roomcast.core.pb import roomcast_pb2", True),
        ("from roomcast.core import pb", True),
        ("import roomcast.core.pb.roomcast_pb2", True),
        ("from .pb import roomcast_pb2", True),
        ("from . import pb", True),
        ("import datetime\ndatetime.timedelta(seconds=1)", False),
        ("from datetime import timezone", False),
        ("import dataclasses\ndataclasses.fields(x)", False),
        ("from roomcast.core import errors", False),
        ("timeout = 1\nself.time = 2\nx.time.monotonic()", False),
        ("import struct\nstruct.pack('>Q', 1)", False),
    ],
)
def test_scanner_catches_violations(source: str, caught: bool) -> None:
    assert bool(find_violations(source, may_import_pb=False)) is caught, source


def test_wire_may_import_pb() -> None:
    source = "from roomcast.core.pb import roomcast_pb2 as pb"
    assert find_violations(source, may_import_pb=True) == []
