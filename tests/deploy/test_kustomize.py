"""Every kustomization under k8s/ renders, and every object it renders is schema-valid.

Built-in kinds are validated offline by ``kubernetes-validate`` in strict mode (unknown fields
fail) against the Kubernetes versions in ``K8S_VERSIONS``; custom resources, which it cannot
know, against the trimmed CRD schemas in ``schemas/`` with ``jsonschema``.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from tests.deploy.kube import K8S, Objects, kustomize_targets, render, require

SCHEMAS = pathlib.Path(__file__).parent / "schemas"
# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
K8S_VERSIONS = ("1.27", "latest")
# apiVersion/kind -> trimmed schema (custom resources).
CUSTOM = {("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json"}
OVERLAYS = [t for t in kustomize_targets() if t.startswith("overlays/")]


def test_the_expected_kustomizations_exist():
    assert kustomize_targets() == ["base", "overlays/dev", "overlays/production"]


@pytest.mark.parametrize("target", kustomize_targets())
def test_renders_cleanly(target: str):
    objs = render(target)
    # kustomize prints deprecation warnings on stderr: the manifests use current fields only.
    assert objs.stderr.strip() == "", f"kubectl kustomize k8s/{target} warned:\n{objs.stderr}"
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in objs]
    assert len(keys) == len(set(keys)), f"duplicate objects in k8s/{target}: {keys}"
    kinds = {d["kind"] for d in objs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ConfigMap", "Secret", "NetworkPolicy"} <= kinds


def _validate_builtin(doc: dict, version: str) -> None:
    kv = require("kubernetes_validate", "kubernetes-validate")
    if version == "latest":
        version = kv.utils.latest_version()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(
            f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version} "
            f"at {where or '(root)'}: {exc.message}",
            pytrace=False,
        )
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"{exc.message} (add a trimmed schema to tests/deploy/schemas?)")


def _validate_custom(doc: dict) -> None:
    jsonschema = require("jsonschema", "jsonschema")
    schema = json.loads((SCHEMAS / CUSTOM[(doc["apiVersion"], doc["kind"])]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(
        f"{doc['kind']}/{doc['metadata'].get('name')} at {'.'.join(map(str, e.path))}: {e.message}"
        for e in errors
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", kustomize_targets())
def test_objects_match_the_kubernetes_schemas(target: str, version: str):
    for doc in render(target):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            _validate_custom(doc)
        else:
            _validate_builtin(doc, version)


def test_the_custom_resource_schema_rejects_what_kubectl_apply_would():
    """The trimmed PodMonitor schema catches a missing, misspelt or mistyped field.

    (kubectl >= 1.27 applies with --validate=strict: unknown fields are errors for CRDs too.)
    """
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
    _validate_custom(good)
    bad_docs = [
        {**good, "spec": {"podMetricsEndpoints": good["spec"]["podMetricsEndpoints"]}},
        {**good, "spec": {**good["spec"], "podMetricEndpoints": []}},
        {**good, "spec": {**good["spec"], "podMetricsEndpoints": [{"port": 8081}]}},
        {**good, "spec": {**good["spec"], "podMetricsEndpoints": [{"interval": "15 seconds"}]}},
        {**good, "metadata": {}},
    ]
    for bad in bad_docs:
        with pytest.raises(AssertionError):
            _validate_custom(bad)


def test_base_is_namespace_agnostic():
    objs = render("base")
    assert not objs.kind("Namespace")
    placed = [d["metadata"]["name"] for d in objs if "namespace" in d["metadata"]]
    assert placed == [], f"base objects with a namespace: {placed}"


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_deploy_into_their_own_namespace(target: str):
    objs = render(target)
    [namespace] = objs.kind("Namespace")
    name = namespace["metadata"]["name"]
    others = [d for d in objs if d["kind"] != "Namespace"]
    assert all(d["metadata"].get("namespace") == name for d in others)
    # Every roomcast pod meets the restricted Pod Security Standard (test_wiring checks how).
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_optional_pieces_are_not_base_resources():
    """The adapter rule is an example for another component's config; PodMonitors need a CRD."""
    yaml = require("yaml", "PyYAML")
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "prometheus-adapter-rules.yaml" not in base["resources"]
    assert (K8S / "base" / "prometheus-adapter-rules.yaml").is_file()
    assert not render("base").kind("PodMonitor")
    assert not render("overlays/dev").kind("PodMonitor")
    assert len(render("overlays/production").kind("PodMonitor")) == 2


def test_all_manifest_files_are_used_or_documented():
    """No stray YAML under k8s/: each file is a resource, patch or component of something."""
    referenced: set[pathlib.Path] = set()
    yaml = require("yaml", "PyYAML")
    for file in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(file.read_text())
        entries = list(k.get("resources") or []) + [
            p["path"] for p in k.get("patches") or [] if "path" in p
        ]
        for entry in entries:
            path = (file.parent / entry).resolve()
            if path.is_file():
                referenced.add(path)
    documented = {(K8S / "base" / "prometheus-adapter-rules.yaml").resolve()}
    stray = [
        p.relative_to(K8S).as_posix()
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and p.resolve() not in referenced | documented
    ]
    assert stray == []


def _names(objs: Objects, kind: str) -> set[str]:
    return {re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]) for d in objs.kind(kind)}


@pytest.mark.parametrize("target", kustomize_targets())
def test_the_same_objects_in_every_kustomization(target: str):
    """Overlays change settings, not the set of workloads, services and policies."""
    objs = render(target)
    assert _names(objs, "Deployment") == {
        "roomcast-router-primary",
        "roomcast-router-backup",
        "roomcast-gateway",
        "roomcast-worker",
    }
    assert _names(objs, "Service") == {
        "roomcast-router-primary",
        "roomcast-router-backup",
        "roomcast-gateway",
        "roomcast-gateway-internal",
    }
    assert _names(objs, "ConfigMap") == {"roomcast-router", "roomcast-gateway", "roomcast-worker"}
    assert _names(objs, "Secret") == {"roomcast-secrets"}
    assert _names(objs, "NetworkPolicy") == {
        "roomcast-router",
        "roomcast-gateway",
        "roomcast-worker",
    }
    for d in objs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "roomcast", d["kind"]
