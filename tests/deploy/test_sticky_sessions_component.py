"""The optional component k8s/components/sticky-sessions (docs/kubernetes.md, "Socket.IO
long-polling and sticky sessions"): rendered into each overlay, it makes the gateways' public
Service sticky by client address and changes nothing else; the result is valid Kubernetes."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from tests.deploy.kube import K8S, kubectl, render, require
from tests.deploy.test_kustomize import _validate_builtin

OVERLAYS = ["overlays/dev", "overlays/production"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_public_service_becomes_sticky(overlay: str, tmp_path: pathlib.Path) -> None:
    yaml = require("yaml", "PyYAML")
    root = tmp_path / "sticky"
    root.mkdir()
    rel = os.path.relpath(K8S, root)
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {rel}/{overlay}\n"
        f"components:\n  - {rel}/components/sticky-sessions\n"
    )
    proc = subprocess.run(
        [kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    plain = {(d["kind"], d["metadata"]["name"]): d for d in render(overlay)}
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == set(plain)
    sticky = 0
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        if doc["kind"] == "Service" and doc["metadata"]["name"].endswith("roomcast-gateway"):
            sticky += 1
            assert doc["spec"]["sessionAffinity"] == "ClientIP"
            assert doc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 3600
            for version in ("1.27", "latest"):
                _validate_builtin(doc, version)
        else:
            assert doc == plain[key], f"{key} changed"
    assert sticky == 1
