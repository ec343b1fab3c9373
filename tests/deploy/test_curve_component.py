"""The optional component k8s/components/curve (docs/kubernetes.md, "CURVE between processes").

It is in no overlay by default, so each test renders a throwaway overlay (in ``tmp_path``) made
of an existing overlay plus the component, and checks, without a cluster:

* it renders without warnings, into the same objects, valid for Kubernetes 1.27 and latest;
* every ``ROOMCAST_CURVE_*`` variable is a flag of the component that gets it, and names a file
  (or, for the router's authorized keys, a directory) of a Secret volume mounted in that pod;
* each pod sees only its own secret key (the routers share the router's) and the router's
  public key; the routers see the whole ``roomcast-curve-clients`` Secret;
* pods whose Secret files are 0440 have an ``fsGroup``, so the non-root process can read them;
* with the files ``roomcast keygen router gateway worker backend`` writes, laid out as the
  kubelet would mount those Secrets, the router's and gateway's own ``parse_args`` and the
  worker's key loading accept the configuration.
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import subprocess
from typing import Any

import pytest

from roomcast import curve
from tests.deploy.kube import (
    K8S,
    Objects,
    component_flags,
    container_env,
    kubectl,
    pod_templates,
    render,
    require,
)
from tests.deploy.test_kustomize import _validate_builtin

OVERLAYS = ["overlays/dev", "overlays/production"]
SECRET = "roomcast-curve"  # secret keys and the router's public key
CLIENTS = "roomcast-curve-clients"  # public keys the routers admit
COMPONENT_OF = {
    "roomcast-router-primary": "router",
    "roomcast-router-backup": "router",
    "roomcast-gateway": "gateway",
    "roomcast-worker": "worker",
}
CURVE_VARS = {
    "router": {"ROOMCAST_CURVE_SECRET_KEY", "ROOMCAST_CURVE_AUTHORIZED_KEYS"},
    "gateway": {"ROOMCAST_CURVE_KEY", "ROOMCAST_CURVE_SERVER_KEY"},
    "worker": {"ROOMCAST_CURVE_KEY", "ROOMCAST_CURVE_SERVER_KEY"},
}


def render_with_curve(overlay: str, tmp_path: pathlib.Path) -> Objects:
    yaml = require("yaml", "PyYAML")
    root = tmp_path / "with-curve"
    root.mkdir()
    rel = os.path.relpath(K8S, root)  # kustomize wants relative paths
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {rel}/{overlay}\n"
        f"components:\n  - {rel}/components/curve\n"
    )
    proc = subprocess.run(
        [kubectl(), "kustomize", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d is not None)
    return Objects(f"{overlay}+components/curve", docs, proc.stderr)


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(deployment)["containers"]
    return dict(only)


def secret_mounts(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the Secret volume source mounted there."""
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes") or []}
    mounts = {}
    for mount in container(deployment).get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            assert mount.get("readOnly") is True, mount
            mounts[mount["mountPath"]] = volume["secret"]
    return mounts


def files_of(source: dict[str, Any], available: list[str]) -> dict[str, str]:
    """File name in the mount -> Secret key, as the kubelet lays a Secret volume out."""
    items = source.get("items")
    if items is None:
        return {key: key for key in available}
    return {item["path"]: item["key"] for item in items}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_into_the_same_valid_objects(overlay: str, tmp_path: pathlib.Path) -> None:
    objs = render_with_curve(overlay, tmp_path)
    assert objs.stderr.strip() == ""
    plain = render(overlay)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in objs if d["kind"] != "ConfigMap") == (
        sorted((d["kind"], d["metadata"]["name"]) for d in plain if d["kind"] != "ConfigMap")
    )
    for version in ("1.27", "latest"):
        for doc in objs:
            if doc["kind"] in ("Deployment", "ConfigMap"):
                _validate_builtin(doc, version)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_key_file_is_mounted_and_only_its_own(overlay: str, tmp_path: pathlib.Path) -> None:
    objs = render_with_curve(overlay, tmp_path)
    keygen = ["router.key", "router.key_secret", "gateway.key_secret", "worker.key_secret"]
    seen_router_secrets = set()
    for deployment in pod_templates(objs):
        name = deployment["metadata"]["name"]
        component = COMPONENT_OF[name]
        env = container_env(objs, container(deployment))
        curve_env = {k: v for k, v in env.items() if k.startswith("ROOMCAST_CURVE_")}
        assert set(curve_env) == CURVE_VARS[component], name
        assert set(curve_env) <= component_flags(component)
        mounts = secret_mounts(deployment)
        curve_mounts = {p: s for p, s in mounts.items() if s["secretName"] in (SECRET, CLIENTS)}
        for var, path in curve_env.items():
            if var == "ROOMCAST_CURVE_AUTHORIZED_KEYS":
                source = curve_mounts[path]
                assert source["secretName"] == CLIENTS and "items" not in source, (name, source)
                continue
            source = curve_mounts[posixpath.dirname(path)]
            assert source["secretName"] == SECRET, (name, var)
            assert files_of(source, keygen)[posixpath.basename(path)] == posixpath.basename(path)
        own_secrets = {
            key
            for source in curve_mounts.values()
            if source["secretName"] == SECRET
            for key in files_of(source, keygen).values()
            if key.endswith(".key_secret")
        }
        assert own_secrets == {f"{component}.key_secret"}, (name, own_secrets)
        if component == "router":
            seen_router_secrets.add(curve_env["ROOMCAST_CURVE_SECRET_KEY"])
        for source in curve_mounts.values():
            assert source.get("optional") is not True, "a missing Secret must stop the pod"
            if source.get("defaultMode", 0o644) & 0o004 == 0:  # not world-readable
                security = pod_spec(deployment)["securityContext"]
                assert security.get("fsGroup") == security["runAsGroup"], name
    assert len(seen_router_secrets) == 1, "both routers of the pair use the router key pair"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_accept_keygen_files_mounted_there(
    overlay: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = render_with_curve(overlay, tmp_path)
    keys = tmp_path / "keys"
    curve.keygen(keys, ["router", "gateway", "worker", "backend"])
    secrets = {
        SECRET: ["router.key", "router.key_secret", "gateway.key_secret", "worker.key_secret"],
        CLIENTS: ["gateway.key", "worker.key", "backend.key"],
    }
    for deployment in pod_templates(objs):
        name = deployment["metadata"]["name"]
        pod_root = tmp_path / "pods" / name
        for path, source in secret_mounts(deployment).items():
            if source["secretName"] not in secrets:
                continue
            target = pod_root / path.lstrip("/")
            target.mkdir(parents=True)
            for file, key in files_of(source, secrets[source["secretName"]]).items():
                (target / file).write_bytes((keys / key).read_bytes())
        env = container_env(objs, container(deployment))
        curve_env = {
            k: str(pod_root / v.lstrip("/"))
            for k, v in env.items()
            if k.startswith("ROOMCAST_CURVE_")
        }
        for key in list(os.environ):
            if key.startswith("ROOMCAST_"):
                monkeypatch.delenv(key)
        for key, value in curve_env.items():
            monkeypatch.setenv(key, value)
        component = COMPONENT_OF[name]
        if component == "router":
            from router.__main__ import parse_args as router_args

            config = router_args([])[0]
            assert curve.authorized_keys(config.curve_authorized_keys) == {
                curve.public_key(keys / f"{n}.key") for n in ("gateway", "worker", "backend")
            }
        elif component == "gateway":
            from gateway.__main__ import parse_args as gateway_args

            assert gateway_args([])[0].curve_key.endswith("gateway.key_secret")
        else:
            options = curve.client_options(
                curve_env["ROOMCAST_CURVE_KEY"], curve_env["ROOMCAST_CURVE_SERVER_KEY"]
            )
            assert options.mode == "client"
