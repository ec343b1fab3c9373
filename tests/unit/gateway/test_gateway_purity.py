"""The gateway's pure modules stay pure: no I/O or event-loop modules, no clock reads.

Imports are checked for real, in a fresh interpreter, one module at a time so a violation names
its module; clock reads and banned imports are also checked in the source, with the scanner of
``tests/unit/test_purity.py`` (whose own tests prove it is not vacuous).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import TIMEOUT_UNIT
from tests.unit.test_purity import FORBIDDEN_MODULES, find_violations

ROOT = pathlib.Path(__file__).resolve().parents[3]
PURE_MODULES = (
    "gateway.plainws",
    "gateway.socketio",
    "gateway.eio_polling",
    "gateway.sails",
    "gateway.frames",
    "gateway.sendqueue",
    "gateway.membership",
    "gateway.strictjson",
    "gateway.requester",
)


def _source(module: str) -> pathlib.Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def test_forbidden_modules_cover_the_brief() -> None:
    assert {"zmq", "tornado", "asyncio", "socket"} <= set(FORBIDDEN_MODULES)


def test_importing_pure_gateway_modules_loads_no_io_modules() -> None:
    # Each module is imported in turn; what it newly loads is recorded against it.
    script = (
        "import importlib, json, sys\n"
        "loaded = {}\n"
        f"for name in {list(PURE_MODULES)!r}:\n"
        "    importlib.import_module(name)\n"
        f"    loaded[name] = sorted(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules)\n"
        "print(json.dumps(loaded))\n"
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
    assert loaded == {name: [] for name in PURE_MODULES}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_gateway_source_is_clean(module: str) -> None:
    path = _source(module)
    assert path.is_file(), path
    violations = find_violations(path.read_text(encoding="utf-8"), may_import_pb=False)
    assert violations == [], f"{module}: {violations}"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_each_pure_module_has_a_test_module(module: str) -> None:
    name = module.rsplit(".", 1)[1]
    assert (pathlib.Path(__file__).parent / f"test_{name}.py").is_file()
