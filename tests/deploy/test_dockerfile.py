"""The Dockerfile, read statically (no container engine here): stages, user, ports, context.

It cannot be built in this workplace, so the structure is what is checked: a builder stage that
builds wheels with ``pip wheel .``, a python:3.11-slim runtime that installs them offline and
has no build tools, a numeric non-root USER in force for the ENTRYPOINT, EXPOSEd ports equal to
the components' default ports, ROOMCAST_* variables that are real flags, and a .dockerignore
that keeps local state out without hiding what the build needs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
from urllib.parse import urlsplit

import pytest

from tests.deploy.kube import DOCKERFILE, ROOT, component_flags

BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "proto", "roomcast", "gateway", "router")
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|grpcio-tools|grpc_tools|pip wheel)\b"
)


@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _instructions(text: str) -> list[Instruction]:
    """Logical instructions: continuation lines joined, comment lines dropped (as Docker does)."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _parse() -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        elif not stages:
            assert ins.keyword == "ARG", f"{ins.keyword} before the first FROM"
            key, _, value = ins.args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.args):
            key, eq, value = word.partition("=")
            assert eq, f"use ENV KEY=VALUE, not {ins.args!r}"
            env[key] = value
    return env


def test_multi_stage_builder_then_slim_runtime():
    _, stages = _parse()
    assert len(stages) == 2
    builder, runtime = stages
    assert builder.name == "builder"
    assert any(re.search(r"\bpip wheel\b.*\s\.$", i.args) for i in builder.all("RUN"))
    assert runtime.base == "python:3.11-slim"
    assert builder.base == runtime.base, "wheels built for the interpreter that runs them"


def test_runtime_installs_the_builders_wheels_offline_and_has_no_build_tools():
    _, stages = _parse()
    runtime = stages[-1]
    runs = [i.args for i in runtime.all("RUN")]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 1
    assert "from=builder" in installs[0] and "--no-index" in installs[0]
    for run in runs:
        assert not BUILD_TOOLS.search(run), f"build tooling in the runtime stage: {run}"
    # Nothing copied in from the build context: the runtime gets wheels only.
    assert not runtime.all("COPY") and not runtime.all("ADD")


def test_runs_as_a_numeric_non_root_user():
    _, stages = _parse()
    runtime = stages[-1]
    keywords = [i.keyword for i in runtime.instructions]
    users = runtime.all("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].args.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert keywords.index("ENTRYPOINT") > last_user
    # Nothing runs after USER as root again, and nothing after it needs root.
    assert "RUN" not in keywords[last_user:]


def test_entrypoint_is_the_roomcast_command_in_exec_form():
    _, stages = _parse()
    [entrypoint] = stages[-1].all("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["roomcast"]
    [cmd] = stages[-1].all("CMD")
    assert isinstance(json.loads(cmd.args), list)


def test_exposed_ports_are_the_components_default_ports(monkeypatch: pytest.MonkeyPatch):
    import os

    for key in list(os.environ):
        if key.startswith("ROOMCAST_"):
            monkeypatch.delenv(key)
    from gateway.__main__ import parse_args as gateway_args
    from router.__main__ import parse_args as router_args

    router, _host, http_port, _level = router_args([])
    gateway, _ = gateway_args([])
    defaults = {
        urlsplit(router.commands).port,
        urlsplit(router.fanout).port,
        http_port,
        gateway.port,
        gateway.internal_port,
    }
    _, stages = _parse()
    exposed = {int(p.split("/")[0]) for i in stages[-1].all("EXPOSE") for p in i.args.split()}
    assert exposed == defaults


def test_env_sets_only_real_flags_and_listens_on_all_interfaces():
    _, stages = _parse()
    env = _env(stages[-1])
    flags = component_flags("router") | component_flags("gateway") | component_flags("worker")
    ours = {k for k in env if k.startswith("ROOMCAST_")}
    assert ours <= flags, f"not flags: {sorted(ours - flags)}"
    assert {env[k] for k in ("ROOMCAST_HOST", "ROOMCAST_INTERNAL_HOST", "ROOMCAST_HTTP_HOST")} == {
        "0.0.0.0"
    }
    # Shared names mean different things per component (bind vs connect): never set in the image.
    assert "ROOMCAST_FANOUT" not in env and "ROOMCAST_ROUTER" not in env


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_state_out_and_build_inputs_in():
    patterns = _dockerignore()
    for path in BUILD_INPUTS:
        assert not _ignored(path, patterns), f".dockerignore hides {path}, which the build needs"
    assert not _ignored("gateway/static/index.html", patterns)
    for path in (".venv", ".git", "roomcast/core/pb", "roomcast.egg-info", "tests", "k8s"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"
    assert _ignored("gateway/__pycache__/app.cpython-311.pyc", patterns)
