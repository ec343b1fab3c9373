"""roomcast.curve without sockets: option builders, key files, keygen, and the flags using them.

Certificates are written with :func:`roomcast.curve.keygen` into ``tmp_path``; bad ones are
written by hand. Every failure is a ``ValueError`` (``SystemExit`` at the process edges) whose
message names the file and what is wrong, and never contains a key. Sockets (the authenticator,
real handshakes) are in ``tests/component/test_curve.py`` and ``tests/integration/test_curve.py``.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat

import pytest
import zmq
import zmq.auth

from roomcast import curve


@pytest.fixture
def certs(tmp_path: pathlib.Path) -> pathlib.Path:
    curve.keygen(tmp_path, ["router", "client"])
    return tmp_path


def secret_of(path: pathlib.Path) -> bytes:
    _public, secret = zmq.auth.load_certificate(path)
    assert secret is not None
    return secret


def opts(options: curve.SocketOptions) -> dict[int, int | bytes]:
    return dict(options.options)


# ------------------------------------------------------------------------------ option builders


def test_plain_is_falsy_and_sets_nothing() -> None:
    assert not curve.PLAIN
    assert curve.PLAIN.options == ()
    assert curve.client_options("", "") is curve.PLAIN


def test_client_options(certs: pathlib.Path) -> None:
    options = curve.client_options(certs / "client.key_secret", str(certs / "router.key"))
    assert options and options.mode == "client"
    public, secret = zmq.auth.load_certificate(certs / "client.key_secret")
    router_public, _ = zmq.auth.load_certificate(certs / "router.key")
    assert opts(options) == {
        zmq.CURVE_PUBLICKEY: public,
        zmq.CURVE_SECRETKEY: secret,
        zmq.CURVE_SERVERKEY: router_public,
    }


def test_server_options(certs: pathlib.Path) -> None:
    options = curve.server_options(certs / "router.key_secret")
    assert options and options.mode == "server"
    got = opts(options)
    assert got[zmq.CURVE_SERVER] == 1
    assert got[zmq.CURVE_SECRETKEY] == secret_of(certs / "router.key_secret")
    assert got[zmq.ZAP_DOMAIN] == curve.ZAP_DOMAIN
    assert got[zmq.ZAP_ENFORCE_DOMAIN] == 1  # no authenticator running: refuse, not admit


def test_a_client_of_itself_for_the_pair_link(certs: pathlib.Path) -> None:
    """The secret file holds the public key too: both routers of a pair share one key pair."""
    secret = certs / "router.key_secret"
    options = opts(curve.client_options(secret, secret))
    assert options[zmq.CURVE_SERVERKEY] == curve.public_key(certs / "router.key")


def test_keys_never_show_in_repr(certs: pathlib.Path) -> None:
    for options in (
        curve.server_options(certs / "router.key_secret"),
        curve.client_options(certs / "client.key_secret", certs / "router.key"),
    ):
        text = repr(options) + str(options)
        for value in opts(options).values():
            if isinstance(value, bytes) and len(value) == 40:
                assert value.decode() not in text


@pytest.mark.parametrize(
    ("own", "server"), [("client.key_secret", ""), ("", "router.key")], ids=["own", "server"]
)
def test_client_needs_both_files(certs: pathlib.Path, own: str, server: str) -> None:
    with pytest.raises(ValueError, match="needs both"):
        curve.client_options(str(certs / own) if own else "", str(certs / server) if server else "")


# ------------------------------------------------------------------------------ bad key files


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


BAD_FILES = {
    "missing": (None, "no such file"),
    "directory": ("<dir>", "not a file"),
    "not a certificate": ("hello\n", "is not a CURVE certificate"),
    "short public key": ('curve\n    public-key = "abc"\n', "not a 40-character key"),
    "bad z85 public key": ('curve\n    public-key = "' + "~" * 40 + '"\n', "40-character key"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("use", ["server", "client own", "client server", "public_key"])
def test_bad_files_give_clear_errors(tmp_path: pathlib.Path, case: str, use: str) -> None:
    curve.keygen(tmp_path, ["good"])
    content, message = BAD_FILES[case]
    bad = tmp_path / "bad.key_secret"
    if content == "<dir>":
        bad.mkdir()
    elif content is not None:
        write(bad, content)
    good_secret, good_public = tmp_path / "good.key_secret", tmp_path / "good.key"
    with pytest.raises(ValueError, match=message) as info:
        if use == "server":
            curve.server_options(bad)
        elif use == "client own":
            curve.client_options(bad, good_public)
        elif use == "client server":
            curve.client_options(good_secret, bad)
        else:
            curve.public_key(bad)
    assert str(bad) in str(info.value)


def test_public_certificate_where_a_secret_one_is_needed(certs: pathlib.Path) -> None:
    for build in (
        lambda: curve.server_options(certs / "router.key"),
        lambda: curve.client_options(certs / "client.key", certs / "router.key"),
    ):
        with pytest.raises(ValueError, match=r"holds no secret key: give the \.key_secret file"):
            build()


def test_secret_key_that_does_not_match_its_public_key(certs: pathlib.Path) -> None:
    path = certs / "client.key_secret"
    other = secret_of(certs / "router.key_secret")
    text = path.read_text()
    own = secret_of(path).decode()
    write(path, text.replace(own, other.decode()))
    with pytest.raises(ValueError, match="does not match") as info:
        curve.server_options(path)
    assert other.decode() not in str(info.value) and own not in str(info.value)


def test_a_directory_is_not_a_certificate(certs: pathlib.Path) -> None:
    # (A chmod 0 file would be readable anyway: these tests run as root in CI.)
    path = certs / "client.key_secret"
    path.unlink()
    path.mkdir()
    with pytest.raises(ValueError, match="not a file"):
        curve.server_options(path)


# ------------------------------------------------------------------------------ authorized keys


def test_authorized_keys_reads_only_public_certificates(certs: pathlib.Path) -> None:
    # A mounted Kubernetes Secret: files plus ..data links; secret files are ignored too.
    (certs / "..data").mkdir()
    write(certs / "README", "not a key")
    keys = curve.authorized_keys(certs)
    assert keys == {curve.public_key(certs / "router.key"), curve.public_key(certs / "client.key")}


def test_authorized_keys_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="cannot read the CURVE authorized keys directory"):
        curve.authorized_keys(tmp_path / "missing")
    with pytest.raises(ValueError, match="no public certificates"):
        curve.authorized_keys(tmp_path)
    write(tmp_path / "broken.key", "garbage\n")
    with pytest.raises(ValueError, match=r"broken\.key is not a CURVE certificate"):
        curve.authorized_keys(tmp_path)


# ---------------------------------------------------------------------------- refusal accounting


def test_server_curve_counts_every_refusal_and_logs_one_per_interval(
    certs: pathlib.Path, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its server options carry the report the monitor threads call (no socket here)."""
    assert curve.server_options(certs / "router.key_secret").report is None
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "client.key").write_bytes((certs / "client.key").read_bytes())
    counted: list[str] = []
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        server = curve.ServerCurve(
            ctx, certs / "router.key_secret", authorized, refused=counted.append
        )
    finally:
        ctx.term()
    report = server.server.report
    assert report is not None and server.peer.report is None  # a client logs its own
    endpoint = "tcp://127.0.0.1:5570"
    with caplog.at_level(logging.WARNING):
        report(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, endpoint)
        for _ in range(3):
            report(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, endpoint)
            report(
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
                endpoint,
            )
    assert counted == ["unauthorized_key", "handshake_failed"] * 3
    # The unauthorized key's line comes from the authenticator (with the peer's address).
    assert caplog.messages == [
        f"refused a CURVE handshake on {endpoint}: one end uses CURVE and the other does not"
    ]


# -------------------------------------------------------------------------------------- keygen


def test_keygen_writes_loadable_pairs_with_a_private_secret(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "new" / "dir"
    written = curve.keygen(target, ["router", "gateway-1"])
    assert written == [
        (str(target / "router.key"), str(target / "router.key_secret")),
        (str(target / "gateway-1.key"), str(target / "gateway-1.key_secret")),
    ]
    for public_path, secret_path in written:
        assert stat.S_IMODE(os.stat(secret_path).st_mode) == 0o600
        public, secret = zmq.auth.load_certificate(secret_path)
        assert secret is not None and zmq.curve_public(secret) == public
        assert zmq.auth.load_certificate(public_path) == (public, None)
    assert curve.public_key(target / "router.key") != curve.public_key(target / "gateway-1.key")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["../x"], "not a certificate name"),
        ([".hidden"], "not a certificate name"),
        ([""], "not a certificate name"),
        (["a", "a"], "given twice"),
    ],
)
def test_keygen_refuses_bad_names(tmp_path: pathlib.Path, names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        curve.keygen(tmp_path, names)
    assert list(tmp_path.iterdir()) == []


def test_keygen_never_overwrites(certs: pathlib.Path) -> None:
    before = (certs / "router.key_secret").read_bytes()
    with pytest.raises(ValueError, match="exists; not overwriting"):
        curve.keygen(certs, ["new", "router"])
    assert (certs / "router.key_secret").read_bytes() == before
    assert not (certs / "new.key").exists()  # all checked before anything is written


def test_keygen_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from roomcast.cli import main as roomcast_main

    assert curve.main(["keygen", str(tmp_path), "a"]) == 0
    assert roomcast_main(["keygen", str(tmp_path), "b"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / f"{n}.{s}") for n in "ab" for s in ("key", "key_secret")]
    with pytest.raises(SystemExit) as exit_info:
        curve.main(["keygen", str(tmp_path), "a"])
    assert exit_info.value.code == 1
    assert "roomcast keygen: " in capsys.readouterr().err


# ------------------------------------------------------------------------ flags at the edges


def test_router_flags(certs: pathlib.Path) -> None:
    from router.__main__ import parse_args

    config = parse_args([])[0]
    assert (config.curve_secret_key, config.curve_authorized_keys) == ("", "")
    args = ["--curve-secret-key", str(certs / "router.key_secret")]
    config = parse_args([*args, "--curve-authorized-keys", str(certs)])[0]
    assert config.curve_secret_key == str(certs / "router.key_secret")
    assert config.curve_authorized_keys == str(certs)
    with pytest.raises(SystemExit):
        parse_args(args)  # argparse error: they go together
    with pytest.raises(SystemExit, match=r"roomcast router: .*holds no secret key"):
        parse_args(
            [
                "--curve-secret-key",
                str(certs / "router.key"),
                *args[2:],
                "--curve-authorized-keys",
                str(certs),
            ]
        )


def test_gateway_flags_and_env(certs: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.__main__ import parse_args

    assert parse_args(["--env", "development"])[0].curve_key == ""
    monkeypatch.setenv("ROOMCAST_CURVE_KEY", str(certs / "client.key_secret"))
    monkeypatch.setenv("ROOMCAST_CURVE_SERVER_KEY", str(certs / "router.key"))
    config = parse_args(["--env", "development"])[0]
    assert config.curve_key == str(certs / "client.key_secret")
    assert config.curve_server_key == str(certs / "router.key")
    monkeypatch.setenv("ROOMCAST_CURVE_SERVER_KEY", str(certs / "missing.key"))
    with pytest.raises(SystemExit, match=r"roomcast gateway: .*no such file"):
        parse_args(["--env", "development"])
    monkeypatch.delenv("ROOMCAST_CURVE_SERVER_KEY")
    with pytest.raises(SystemExit):
        parse_args(["--env", "development"])  # argparse error: they go together


def test_worker_flags(certs: pathlib.Path) -> None:
    from roomcast.worker import main as worker_main

    with pytest.raises(SystemExit, match=r"roomcast worker: .*holds no secret key"):
        worker_main(
            [
                "m:app",
                "--curve-key",
                str(certs / "client.key"),
                "--curve-server-key",
                str(certs / "router.key"),
            ]
        )


def test_sdk_reads_key_files_when_constructed(certs: pathlib.Path) -> None:
    from roomcast import Cluster, SyncCluster

    for make in (Cluster, SyncCluster):
        with pytest.raises(ValueError, match="no such file"):
            make(
                "tcp://127.0.0.1:1", curve_key=certs / "nope", curve_server_key=certs / "router.key"
            )
        with pytest.raises(ValueError, match="needs both"):
            make("tcp://127.0.0.1:1", curve_key=certs / "client.key_secret")
        make(
            "tcp://127.0.0.1:1",
            curve_key=str(certs / "client.key_secret"),
            curve_server_key=certs / "router.key",
        )  # opens nothing until first use


def test_key_roles_come_from_the_file_names(tmp_path: pathlib.Path) -> None:
    names = ["gateway", "gateway-eu", "worker-1", "backend", "legacy"]
    curve.keygen(tmp_path, names)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    for name in names:
        (authorized / f"{name}.key").write_bytes((tmp_path / f"{name}.key").read_bytes())
    roles = curve.key_roles(authorized)
    by_name = {name: roles[curve.public_key(tmp_path / f"{name}.key")] for name in names}
    assert by_name == {
        "gateway": "gateway",
        "gateway-eu": "gateway",
        "worker-1": "worker",
        "backend": "backend",
        "legacy": curve.ANY_ROLE,
    }


def test_the_fanout_has_its_own_zap_domain(certs: pathlib.Path) -> None:
    fanout = opts(curve.server_options(certs / "router.key_secret", curve.FANOUT_ZAP_DOMAIN))
    assert fanout[zmq.ZAP_DOMAIN] == curve.FANOUT_ZAP_DOMAIN != curve.ZAP_DOMAIN
