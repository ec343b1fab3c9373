"""The commands a newcomer types, as real processes: help, taken ports, ``roomcast dev``.

* ``--help`` of ``roomcast`` and each subcommand lists every flag with its default;
  ``./scripts/run --help`` answers without a bootstrap.
* A taken port is one line naming the address and the flag, exit status 2, and a gateway that
  cannot bind says nothing to the router; gateways on neighbouring ports collide with nothing
  at the default internal port.
* ``roomcast dev`` (through ``./scripts/run``, from an app's own folder): imports the app from
  there, shows its ``print()`` output prefixed, calls its ``@app.on_connect``, restarts a child
  that dies, and every way it ends (SIGTERM, SIGHUP, even SIGKILL) ends its children.
* The README's tour, run against that cluster.

Every wait polls with a deadline (``deadline_poll``) or waits for a READY line or an exit.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    DRAIN_TIMEOUT,
    REPO,
    Proc,
    WsClient,
    fresh_room,
    router_proc,
)

# ------------------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


def run(argv: list[str], *, cwd: pathlib.Path = REPO, timeout: float = 20 * T) -> Any:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def children_of(pid: int) -> dict[int, str]:
    """Live (non-zombie) processes whose parent is ``pid``: {pid: command line}."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def one_line_naming(stderr: str, address: str, flag: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "cannot listen" in line]
    assert lines == [lines[0]] and f"cannot listen on {address} ({flag})" in lines[0], stderr
    assert "address already in use" in lines[0], stderr


# ---------------------------------------------------------------------------------------- help

_COMMANDS = [[], ["router"], ["gateway"], ["worker"], ["dev"], ["bench"], ["keygen"]]


@pytest.mark.parametrize("command", _COMMANDS, ids=lambda c: " ".join(["roomcast", *c]))
def test_help_lists_every_flag_with_its_default(command: list[str]) -> None:
    result = run([sys.executable, "-m", "roomcast.cli", *command, "--help"])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # Option entries start two spaces in; wrapped help lines are indented further.
    flags = set(re.findall(r"^  (--[a-z][a-z0-9-]*)", text, re.M)) - {"--help"}
    for flag in flags:
        # The flag's entry: from its line to the next flag's.
        entry = re.search(rf"^  {flag}\b.*?(?=^  -|^\S|\Z)", text, re.M | re.S)
        assert entry is not None, flag
        body = " ".join(entry.group(0).split())
        words = re.sub(r"\[env: [A-Z0-9_]+\]|\(default: [^)]*\)", "", body).split()
        assert len(words) > 3, f"{command} {flag}: no help sentence: {body!r}"
        assert "(default:" in body or "default" in body, f"{command} {flag}: no default: {body!r}"


def test_scripts_run_help_needs_no_bootstrap(tmp_path: pathlib.Path) -> None:
    # A fresh clone: the scripts and the package, no virtualenv.
    root = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "scripts", root / "scripts", ignore=ignore)
    shutil.copytree(REPO / "roomcast", root / "roomcast", ignore=ignore)
    result = run(["bash", str(root / "scripts" / "run"), "--help"], cwd=tmp_path, timeout=10 * T)
    assert result.returncode == 0, result.stderr
    assert "--worker" in result.stdout and "--on-exit" in result.stdout, result.stdout
    assert "bootstrap" not in result.stderr, result.stderr
    assert not (root / ".venv").exists()


# --------------------------------------------------------------------------------- taken ports


def _gateway(name: str, router: dict[str, Any], *args: str) -> Proc:
    base = ["-m", "gateway", "--router", router["commands"], "--fanout", router["fanout"]]
    base += ["--env", "development", "--drain-timeout", str(DRAIN_TIMEOUT)]
    return Proc(name, [*base, *args])


def _exit_code(proc: Proc, timeout: float) -> int:
    try:
        code = proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{proc.name} still running after {timeout:.1f}s\n{proc.log_tail()}")
    proc.kill()  # reaps and closes the log
    return code


@pytest.fixture
def router() -> Iterator[Proc]:
    proc = router_proc()
    proc.wait_ready()
    yield proc
    proc.stop()


def _quiet_base() -> int:
    """A port P with P, P+1, P+1000 and P+1001 free, below the ephemeral range (where other
    processes' port-0 sockets land), so that nothing takes them between the check and the use."""
    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10_000, max(10_001, low - 1_002))
        if all(port_free(p) for p in (base, base + 1, base + 1000, base + 1001)):
            return base
    pytest.skip("no four free ports below the ephemeral range")


def test_gateways_on_neighbouring_ports_collide_with_nothing(router: Proc) -> None:
    base = _quiet_base()
    gws = [_gateway(f"gw{i}", router.info, "--port", str(base + i)) for i in range(2)]
    try:
        infos = [g.wait_ready() for g in gws]
        assert [i["internal"] for i in infos] == [
            f"http://127.0.0.1:{base + 1000}",
            f"http://127.0.0.1:{base + 1001}",
        ]
    finally:
        for g in gws:
            g.stop()


def test_a_taken_gateway_port_is_one_line_exit_2_and_no_hello(router: Proc) -> None:
    first = _gateway("first", router.info, "--port", "0", "--internal-port", "0")
    first.wait_ready()
    taken = {
        "--port": int(first.info["internal"].rsplit(":", 1)[1]),
        "--internal-port": int(first.info["public"].rsplit(":", 1)[1]),
    }
    try:
        for flag, port in taken.items():
            ports = {"--port": "0", "--internal-port": "0", flag: str(port)}
            args = [a for kv in ports.items() for a in kv]
            late = _gateway("late", router.info, *args, "--gateway-id", "collider")
            assert _exit_code(late, 15 * T) == 2
            one_line_naming(late.log_text(), f"127.0.0.1:{port}", flag)
        # A gateway started after them is welcomed; the router never heard of the collider.
        witness = _gateway(
            "witness", router.info, "--port", "0", "--internal-port", "0", "--gateway-id", "witness"
        )
        witness.wait_ready()
        witness.stop()
        log = router.log_text()
        assert "gateway witness hello" in log, log
        assert "collider" not in log, log
    finally:
        first.stop()


def test_a_taken_router_port_is_one_line_exit_2(router: Proc) -> None:
    commands, fanout = router.info["commands"], router.info["fanout"]
    http_port = router.info["http"].rsplit(":", 1)[1]
    cases = [
        (["--commands", commands, "--fanout", "tcp://127.0.0.1:0", "--http-port", "0"],
         commands, "--commands"),
        (["--commands", "tcp://127.0.0.1:0", "--fanout", fanout, "--http-port", "0"],
         fanout, "--fanout"),
        (["--commands", "tcp://127.0.0.1:0", "--fanout", "tcp://127.0.0.1:0",
          "--http-port", http_port], f"127.0.0.1:{http_port}", "--http-port"),
    ]  # fmt: skip
    for args, address, flag in cases:
        second = Proc("second-router", ["-m", "router", *args])
        assert _exit_code(second, 15 * T) == 2
        one_line_naming(second.log_text(), address, flag)


# ------------------------------------------------------------------------------- roomcast dev


def _readme_blocks(lang: str, marker: str) -> str:
    """The README's first ``lang`` code block containing ``marker``."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return next(b for kind, b in blocks if kind == lang and marker in b)


def _start_dev(folder: pathlib.Path, *args: str) -> Proc:
    """``./scripts/run --port 0 ...`` from ``folder`` (bootstrap is quick once done)."""
    argv = [str(REPO / "scripts" / "run"), "--port", "0", "--drain-timeout", str(DRAIN_TIMEOUT)]
    return Proc("dev", [*argv, *args], cwd=folder, program="bash")


@pytest.fixture(scope="module")
def app_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    # The README's "your own app, from your own folder": its chat.py, in a folder of its own.
    folder = tmp_path_factory.mktemp("myproject")
    (folder / "chat.py").write_text(_readme_blocks("python", "def let_in"))
    dev = _start_dev(folder, "--gateways", "2", "--worker", "chat:app")
    try:
        dev.wait_ready(30 * T)
    except BaseException:
        dev.kill()
        raise
    yield dev
    pid = dev.popen.pid
    kids = children_of(pid)
    dev.stop()
    deadline_poll(lambda: not any(alive(k) for k in kids), 10 * T, message="dev's children end")


def _ws(dev: Proc, gateway: int, query: str = "?let=in") -> WsClient:
    return WsClient(
        dev.info["gateways"][gateway]["public"].replace("http", "ws", 1) + "/ws" + query
    )


def test_dev_runs_the_app_from_its_own_folder_and_shows_its_prints(app_dev: Proc) -> None:
    client = _ws(app_dev, 0)
    try:
        reply = client.request("request", method="POST", url="/chat/hello", data={})
        assert reply["statusCode"] == 200 and reply["body"] == {"hello": client.id}, reply
    finally:
        client.close()
    line = f"[worker chat:app] hello from {client.id}"
    deadline_poll(lambda: line in app_dev.log_text(), 5 * T, message=repr(line))


def test_dev_calls_the_apps_on_connect(app_dev: Proc) -> None:
    url = app_dev.info["gateways"][1]["public"].replace("http", "ws", 1) + "/ws"
    with pytest.raises(ConnectionClosed) as info, connect(url, open_timeout=10 * T) as ws:
        ws.recv(10 * T)  # no welcome: refused
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    _ws(app_dev, 1).close()  # and let in when it asks


def test_dev_restarts_a_child_that_dies_and_keeps_the_rest(app_dev: Proc) -> None:
    pid = app_dev.popen.pid
    gateways = {k: c for k, c in children_of(pid).items() if "-m gateway" in c}
    victim = max(gateways)
    assert "-m gateway" in gateways[victim]
    others = set(children_of(pid)) - {victim}
    os.kill(victim, signal.SIGKILL)
    deadline_poll(
        lambda: "restarted" in app_dev.log_text(), 20 * T, message="the gateway restarted"
    )
    log = app_dev.log_text()
    assert "exited with signal SIGKILL; restarting it" in log, log
    assert app_dev.alive() and others <= set(children_of(pid))
    # Back on the same ports: both gateways welcome clients and serve the app.
    for gateway in (0, 1):
        client = _ws(app_dev, gateway)
        try:
            assert client.request("request", method="POST", url="/chat/hello")["statusCode"] == 200
        finally:
            client.close()


def test_readme_tour_against_the_cluster(app_dev: Proc, tmp_path: pathlib.Path) -> None:
    """Step 2 (the Python broadcast) and step 3 (curl) of the README, with the real addresses
    from dev's READY line instead of the fixed ports, and two 'tabs' in the lobby."""
    python = _readme_blocks("python", "sockets in the lobby")
    curl = _readme_blocks("sh", "curl")
    info = app_dev.info
    lobby = fresh_room("lobby")
    tabs = [_ws(app_dev, 0), _ws(app_dev, 1)]
    try:
        for tab in tabs:
            tab.join(lobby)
        script = python.replace("tcp://127.0.0.1:5570", info["router"]["commands"])
        (tmp_path / "tour.py").write_text(script.replace('"lobby"', repr(lobby)))
        result = run([sys.executable, "tour.py"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "2 sockets in the lobby", result.stdout
        for tab in tabs:
            assert tab.next_event(10 * T).data == {"from": "backend", "text": "hello"}
        command = textwrap.dedent(curl).replace(
            "http://127.0.0.1:9080", info["gateways"][0]["internal"]
        )
        command = command.replace('"lobby"', json.dumps(lobby))
        result = run(["bash", "-c", command], cwd=tmp_path)
        expected = re.search(r"^# (\{.*\})$", curl, re.M)
        assert expected is not None and result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == json.loads(expected.group(1)), result.stdout
        for tab in tabs:
            assert tab.next_event(10 * T).data == {"from": "curl", "text": "hello from curl"}
    finally:
        for tab in tabs:
            tab.close()


@pytest.mark.parametrize("how", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_every_way_dev_ends_ends_its_children(tmp_path: pathlib.Path, how: signal.Signals) -> None:
    dev = Proc(
        "dev",
        ["-m", "roomcast.cli", "dev", "--port", "0", "--gateways", "1",
         "--drain-timeout", str(DRAIN_TIMEOUT)],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        dev.wait_ready()
        kids = deadline_poll(
            lambda: (lambda k: k if len(k) == 2 else None)(children_of(dev.popen.pid)),
            5 * T,
            message="the router and the gateway",
        )
        dev.popen.send_signal(how)
        code = dev.popen.wait((DRAIN_TIMEOUT + 5) * T)
        assert code == (0 if how == signal.SIGHUP else -signal.SIGKILL), dev.log_tail()
        deadline_poll(
            lambda: not any(alive(k) for k in kids),
            (DRAIN_TIMEOUT + 5) * T,
            message=f"no child of dev left after {how.name}",
        )
    finally:
        dev.kill()


@pytest.mark.parametrize("policy", ["keep", "stop"])
def test_dev_on_exit_keep_and_stop(tmp_path: pathlib.Path, policy: str) -> None:
    dev = Proc(
        "dev",
        ["-m", "roomcast.cli", "dev", "--port", "0", "--gateways", "2", "--on-exit", policy,
         "--drain-timeout", str(DRAIN_TIMEOUT)],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        dev.wait_ready()
        kids = children_of(dev.popen.pid)
        victim = max(k for k, c in kids.items() if "-m gateway" in c)
        os.kill(victim, signal.SIGKILL)
        if policy == "keep":
            said = "exited with signal SIGKILL; the others keep running (--on-exit keep)"
            deadline_poll(lambda: said in dev.log_text(), 10 * T, message=repr(said))
            assert dev.alive() and set(children_of(dev.popen.pid)) == set(kids) - {victim}
            assert "restart" not in dev.log_text()
            assert dev.stop() == 0
        else:
            assert dev.popen.wait((DRAIN_TIMEOUT + 5) * T) == 1
            assert "exited with signal SIGKILL; stopping" in dev.log_text()
        deadline_poll(lambda: not any(alive(k) for k in kids), 10 * T, message="no child left")
    finally:
        dev.kill()
