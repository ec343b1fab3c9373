"""The rendered objects fit each other and the programs they run.

* probes hit paths the Tornado apps really route, on named container ports that exist;
* each container's ROOMCAST_* variables are flags of its component, and parse; the ports the
  process will bind are the container ports, on all interfaces;
* addresses in the config name a Service port that leads to the right container port;
* Service, PodDisruptionBudget, PodMonitor, NetworkPolicy and anti-affinity selectors select
  the pods they are meant for; the autoscaler targets the gateway Deployment;
* the routers are a primary/backup pair: two Deployments, each pointed at the other's Service,
  and gateways and workers given both, primary first;
* shutdown fits: terminationGracePeriodSeconds > ROOMCAST_DRAIN_TIMEOUT + preStop sleep;
* pods run as the image's non-root user, without service links.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import pathlib
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from tests.deploy.kube import (
    DOCKERFILE,
    K8S,
    Objects,
    component_flags,
    container_env,
    kustomize_targets,
    labels_match,
    pod_templates,
    render,
    require,
)

TARGETS = kustomize_targets()
COMPONENTS = ("router", "gateway", "worker")
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
# Which container port serves what, per component.
METRICS_PORT = {"router": "http", "gateway": "internal"}
# The readiness path per component: a router's /readyz is 200 only while it serves, so the
# standby of the pair would never be ready (out of its Service, its rollout never done).
READINESS = {"router": "/healthz", "gateway": "/readyz"}
ROLE = "roomcast/router-role"
ROUTERS = ("roomcast-router-primary", "roomcast-router-backup")
# Margin beyond preStop + drain for closing sockets and exiting (seconds).
SHUTDOWN_MARGIN_S = 5


# -- helpers ----------------------------------------------------------------------------------


def _deployments(objs: Objects, component: str) -> list[dict[str, Any]]:
    found = [d for d in pod_templates(objs) if d["metadata"]["labels"].get(COMPONENT) == component]
    expected = 2 if component == "router" else 1  # the router pair: primary and backup
    assert len(found) == expected, f"k8s/{objs.target}: {expected} {component} Deployment(s)"
    return sorted(found, key=lambda d: ROUTERS.index(d["metadata"]["name"]) if expected == 2 else 0)


def _deployment(objs: Objects, component: str) -> dict[str, Any]:
    """The one Deployment of a component (the routers' first, the primary, where any will do)."""
    return _deployments(objs, component)[0]


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports") or []}


def _component_of(container: dict[str, Any]) -> str:
    """The roomcast subcommand a container runs (the image's ENTRYPOINT is `roomcast`)."""
    assert "command" not in container, "containers keep the image's ENTRYPOINT (roomcast)"
    subcommand = container["args"][0]
    assert subcommand in COMPONENTS, f"unexpected roomcast subcommand {subcommand!r}"
    return str(subcommand)


def _parse(component: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The component's own parse_args() on exactly this environment (and no argv)."""
    import os

    for key in list(os.environ):
        if key.startswith("ROOMCAST_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if component == "router":
        from router.__main__ import parse_args
    else:
        from gateway.__main__ import parse_args
    try:
        return parse_args([])
    except SystemExit:
        pytest.fail(f"{component} rejects its environment {env!r} (see stderr)", pytrace=False)


def _routes(app: Any) -> list[Any]:
    return [rule.matcher.regex for rule in app.wildcard_router.rules]


def _served(app: Any, path: str) -> bool:
    return any(regex.fullmatch(path) for regex in _routes(app))


def _http_apps() -> dict[str, Any]:
    """The Tornado apps behind each component's probe/metrics port."""
    from gateway.app import make_internal_app
    from router.http import make_app

    # Only the routes matter here: the registry is real, the other collaborators (the gateway,
    # the HTTP API) are only handed to handlers, so stand-ins do.
    params = inspect.signature(make_internal_app).parameters
    args = [CollectorRegistry() if name == "registry" else object() for name in params]
    return {
        "router": make_app(CollectorRegistry(), lambda: True),
        "gateway": make_internal_app(*args),
    }


def _mount_secrets(
    objs: Objects, deployment: dict[str, Any], env: dict[str, str], root: pathlib.Path
) -> dict[str, str]:
    """Write the pod's Secret volumes under ``root`` as the kubelet would; rewrite env paths."""
    spec = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in _container(deployment).get("volumeMounts", [])}
    env = dict(env)
    for volume in spec.get("volumes") or []:
        if "secret" not in volume:
            continue
        secret = objs.by_exact_name("Secret", volume["secret"]["secretName"])
        assert secret is not None, f"volume {volume['name']} names a missing Secret"
        mount = mounts[volume["name"]]
        local = root / mount.strip("/")
        local.mkdir(parents=True)
        for key, value in (secret.get("data") or {}).items():
            (local / key).write_bytes(base64.b64decode(value))
        for name, value in env.items():
            if value.startswith(mount.rstrip("/") + "/"):
                env[name] = str(local) + value[len(mount.rstrip("/")) :]
    return env


def _prestop_seconds(container: dict[str, Any]) -> float:
    pre = (container.get("lifecycle") or {}).get("preStop")
    assert pre, "gateways need a preStop pause so endpoints go before SIGTERM"
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop is not a plain sleep: {command}"
    return float(command[1])


def _service_port(objs: Objects, address: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service and Service port a tcp://NAME:PORT address reaches."""
    parts = urlsplit(address)
    assert parts.scheme == "tcp", address
    services = [s for s in objs.kind("Service") if s["metadata"]["name"] == parts.hostname]
    assert services, f"{address}: no Service named {parts.hostname!r}"
    [port] = [p for p in services[0]["spec"]["ports"] if p["port"] == parts.port]
    return services[0], port


def _selected(objs: Objects, selector: dict[str, Any]) -> list[str]:
    """Components whose pods a selector selects (each once)."""
    return sorted({d["metadata"]["labels"][COMPONENT] for d in _selected_workloads(objs, selector)})


def _selected_workloads(objs: Objects, selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in pod_templates(objs) if labels_match(selector, _pod_labels(d))]


def _selected_names(objs: Objects, selector: dict[str, Any]) -> list[str]:
    """Deployments whose pods a selector selects."""
    return [d["metadata"]["name"] for d in _selected_workloads(objs, selector)]


# -- labels and selectors ---------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_workloads_are_labelled_and_select_their_own_pods(target: str):
    objs = render(target)
    for component in COMPONENTS:
        for d in _deployments(objs, component):
            labels = _pod_labels(d)
            assert labels[NAME] == "roomcast" and labels[COMPONENT] == component
            selector = d["spec"]["selector"]["matchLabels"]
            own = {NAME: "roomcast", COMPONENT: component}
            if component == "router":  # two Deployments must not select each other's pods
                own[ROLE] = labels[ROLE]
            assert selector == own
            assert _selected_names(objs, {"matchLabels": selector}) == [d["metadata"]["name"]]
            assert _component_of(_container(d)) == component


@pytest.mark.parametrize("target", TARGETS)
def test_services_select_one_component_and_target_its_named_ports(target: str):
    objs = render(target)
    router_ports = {"commands", "fanout", "http", "peer"}
    expected = {
        "roomcast-router-primary": ("roomcast-router-primary", router_ports),
        "roomcast-router-backup": ("roomcast-router-backup", router_ports),
        "roomcast-gateway": ("roomcast-gateway", {"public"}),
        "roomcast-gateway-internal": ("roomcast-gateway", {"internal"}),
    }
    assert {s["metadata"]["name"] for s in objs.kind("Service")} == set(expected)
    for service in objs.kind("Service"):
        name = service["metadata"]["name"]
        workload, port_names = expected[name]
        selector = {"matchLabels": service["spec"]["selector"]}
        [deployment] = _selected_workloads(objs, selector)
        assert deployment["metadata"]["name"] == workload, name
        ports = _ports(_container(deployment))
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert targets == port_names, name
        for p in service["spec"]["ports"]:
            assert p["port"] == ports[p["targetPort"]], f"{name}: {p} keeps the container's port"


@pytest.mark.parametrize("target", TARGETS)
def test_autoscaler_and_disruption_budget_cover_the_gateways(target: str):
    objs = render(target)
    [hpa] = objs.kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    gateway = _deployment(objs, "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": gateway["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The autoscaler owns the replica count: an apply must not reset it.
    assert "replicas" not in gateway["spec"]
    # CPU utilization is relative to requests: every container must request CPU.
    assert any(
        m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]
    )
    assert _container(gateway)["resources"]["requests"]["cpu"]
    [pdb] = objs.kind("PodDisruptionBudget")
    assert _selected(objs, pdb["spec"]["selector"]) == ["gateway"]


def _pods_metrics(hpa: dict[str, Any]) -> list[str]:
    return [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]


def test_autoscaler_connections_metric_is_real_and_served_by_the_adapter_rule():
    from gateway.metrics import GatewayMetrics

    yaml = require("yaml", "PyYAML")
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    gauges = {m.name for m in registry.collect() if m.type == "gauge"}
    rules = yaml.safe_load((K8S / "base" / "prometheus-adapter-rules.yaml").read_text())
    served = {r["name"]["as"] for r in rules["rules"]["custom"]}
    for target in ("base", "overlays/production"):
        [hpa] = render(target).kind("HorizontalPodAutoscaler")
        assert _pods_metrics(hpa) == ["roomcast_gateway_connections"]
        assert set(_pods_metrics(hpa)) <= gauges & served
    for rule in rules["rules"]["custom"]:
        assert rule["name"]["as"] in rule["seriesQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_dev_autoscales_on_cpu_alone():
    """No prometheus-adapter in dev clusters: an unreadable Pods metric would block scale-down."""
    [hpa] = render("overlays/dev").kind("HorizontalPodAutoscaler")
    assert _pods_metrics(hpa) == []


# -- probes, ports, env -----------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_probes_hit_real_paths_on_named_ports(target: str):
    objs = render(target)
    apps = _http_apps()
    for component in ("router", "gateway"):
        for d in _deployments(objs, component):
            container = _container(d)
            ports = _ports(container)
            probes = (("readinessProbe", READINESS[component]), ("livenessProbe", "/healthz"))
            for probe, path in probes:
                get = container[probe]["httpGet"]
                assert get["path"] == path, f"{component} {probe}"
                assert isinstance(get["port"], str) and get["port"] in ports, f"{probe}"
                # The port serves the app that routes the path (the metrics/health app).
                assert get["port"] == METRICS_PORT[component]
                assert _served(apps[component], path), f"{component} does not route {path}"
    worker = _container(_deployment(objs, "worker"))
    assert "ports" not in worker and "readinessProbe" not in worker


@pytest.mark.parametrize("target", TARGETS)
def test_roomcast_env_vars_are_flags_of_their_component(target: str):
    objs = render(target)
    for component in COMPONENTS:
        for d in _deployments(objs, component):
            env = container_env(objs, _container(d))
            ours = {k for k in env if k.startswith("ROOMCAST_")}
            unknown = ours - component_flags(component)
            assert not unknown, f"k8s/{target}: {component} has no flag for {sorted(unknown)}"


@pytest.mark.parametrize("target", TARGETS)
def test_router_binds_its_container_ports_on_all_interfaces(
    target: str, monkeypatch: pytest.MonkeyPatch
):
    objs = render(target)
    for d in _deployments(objs, "router"):
        container = _container(d)
        config, http_host, http_port, _level = _parse(
            "router", container_env(objs, container), monkeypatch
        )
        ports = _ports(container)
        binds = (("commands", config.commands), ("fanout", config.fanout))
        for name, url in (*binds, ("peer", config.peer_bind)):
            parts = urlsplit(url)
            assert parts.scheme == "tcp" and parts.hostname in ("0.0.0.0", "*"), url
            assert parts.port == ports[name], f"{name}: binds {url}, container port {ports[name]}"
        assert http_host == "0.0.0.0"
        assert http_port == ports["http"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_routers_are_a_pair_each_pointed_at_the_other(
    target: str, monkeypatch: pytest.MonkeyPatch
):
    objs = render(target)
    primary, backup = _deployments(objs, "router")
    roles = {}
    for d, other in ((primary, backup), (backup, primary)):
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
        env = container_env(objs, _container(d))
        config, *_ = _parse("router", env, monkeypatch)
        roles[d["metadata"]["name"]] = config.role
        assert _pod_labels(d)[ROLE] == config.role
        assert config.peer_timeout_s > 0
        # Its peer address is the other router's Service, on the port the other binds.
        service, port = _service_port(objs, config.peer_connect)
        assert _selected_names(objs, {"matchLabels": service["spec"]["selector"]}) == [
            other["metadata"]["name"]
        ]
        assert port["targetPort"] == "peer" and port["port"] == _ports(_container(other))["peer"]
    assert roles == {"roomcast-router-primary": "primary", "roomcast-router-backup": "backup"}


def _router_addresses(objs: Objects, value: str, port_name: str) -> None:
    """A comma-separated pair: the primary's Service first, then the backup's, on port_name."""
    addresses = value.split(",")
    assert len(addresses) == 2, value
    for address, name in zip(addresses, ROUTERS, strict=True):
        service, port = _service_port(objs, address)
        assert _selected_names(objs, {"matchLabels": service["spec"]["selector"]}) == [name]
        router = objs.get("Deployment", name)
        assert port["targetPort"] == port_name, address
        assert port["port"] == _ports(_container(router))[port_name], address


@pytest.mark.parametrize("target", TARGETS)
def test_gateway_binds_its_container_ports_and_reaches_the_router(
    target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
):
    objs = render(target)
    gateway = _deployment(objs, "gateway")
    container = _container(gateway)
    env = _mount_secrets(objs, gateway, container_env(objs, container), tmp_path)
    config, _level = _parse("gateway", env, monkeypatch)
    ports = _ports(container)
    assert (config.host, config.port) == ("0.0.0.0", ports["public"])
    assert (config.internal_host, config.internal_port) == ("0.0.0.0", ports["internal"])
    _router_addresses(objs, config.router, "commands")
    _router_addresses(objs, config.fanout, "fanout")
    if target == "overlays/dev":
        assert config.env == "development"
    else:
        assert config.env == "production"
    # The placeholder Secret grants nothing: no API key (a production gateway then refuses the
    # HTTP API) and no token secret.
    assert config.api_keys == () and config.token_secrets == ()
    # The gateway's own start-up guard (gateway.__main__.main) accepts the configuration.
    assert config.production_problem() is None
    if config.env == "production":
        assert config.allowed_origins, "production gateways need an origin allowlist"


@pytest.mark.parametrize("target", TARGETS)
def test_worker_serves_an_app_and_reaches_the_router(target: str):
    objs = render(target)
    container = _container(_deployment(objs, "worker"))
    env = container_env(objs, container)
    args = container["args"]
    assert args[:2] == ["worker", "$(WORKER_APP)"]
    # The kubelet expands $(VAR) from the container's environment (envFrom included).
    assert re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", env["WORKER_APP"]), env["WORKER_APP"]
    # The module ships in the image (the roomcast wheel) and holds a roomcast App.
    from roomcast.app import App

    module, _, attr = env["WORKER_APP"].partition(":")
    assert module.split(".")[0] in ("roomcast", "gateway", "router"), "not in the image"
    assert isinstance(getattr(importlib.import_module(module), attr), App)
    _router_addresses(objs, env["ROOMCAST_ROUTER"], "commands")


@pytest.mark.parametrize("target", TARGETS)
def test_grace_period_covers_prestop_and_drain(target: str):
    objs = render(target)
    gateway = _deployment(objs, "gateway")
    container = _container(gateway)
    drain = float(container_env(objs, container)["ROOMCAST_DRAIN_TIMEOUT"])
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= _prestop_seconds(container) + drain + SHUTDOWN_MARGIN_S, (
        f"k8s/{target}: gateway grace {grace}s <= preStop {_prestop_seconds(container)}s + "
        f"drain {drain}s + {SHUTDOWN_MARGIN_S}s"
    )
    for router in _deployments(objs, "router"):
        router_drain = float(container_env(objs, _container(router))["ROOMCAST_DRAIN_TIMEOUT"])
        router_grace = router["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert router_grace >= router_drain + SHUTDOWN_MARGIN_S
        assert router["spec"]["strategy"] == {"type": "Recreate"}
        assert router["spec"]["replicas"] == 1


@pytest.mark.parametrize("target", TARGETS)
def test_gateways_read_their_secrets_from_the_generated_secret(target: str):
    objs = render(target)
    gateway = _deployment(objs, "gateway")
    spec = gateway["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if "secret" in v]
    secret = objs.by_exact_name("Secret", volume["secret"]["secretName"])
    assert secret is not None, "the volume names the generated (hash-suffixed) Secret"
    mounts = {m["name"]: m for m in _container(gateway)["volumeMounts"]}
    mount = mounts[volume["name"]]
    assert mount["readOnly"] is True
    env = container_env(objs, _container(gateway))
    files = {
        "api-keys": env["ROOMCAST_API_KEY_FILE"],
        "token-secret": env["ROOMCAST_TOKEN_SECRET_FILE"],
    }
    assert set(secret["data"]) == set(files)
    for key, path in files.items():
        assert path == mount["mountPath"].rstrip("/") + "/" + key


# -- security ---------------------------------------------------------------------------------


def _image_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    return int(users[-1].split(":")[0])


@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_as_the_images_non_root_user_without_service_links(target: str):
    objs = render(target)
    for d in pod_templates(objs):
        spec = d["spec"]["template"]["spec"]
        # Service links would add ROOMCAST_ROUTER_PORT=tcp://..., ROOMCAST_GATEWAY_PORT=... to
        # the environment, where ROOMCAST_* is read as flags.
        assert spec["enableServiceLinks"] is False
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == _image_uid() != 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            # Every pod is sized: requests for scheduling (and CPU-based autoscaling), a memory
            # limit; resource names are the standard ones (a typo is schema-valid).
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert set(requests) == {"cpu", "memory"} and "memory" in limits
            assert set(limits) <= {"cpu", "memory"}


# -- metrics scraping -------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_scrape_annotations_point_at_the_metrics_port(target: str):
    objs = render(target)
    apps = _http_apps()
    for component, port_name in METRICS_PORT.items():
        for d in _deployments(objs, component):
            notes = d["spec"]["template"]["metadata"]["annotations"]
            assert notes["prometheus.io/scrape"] == "true"
            assert notes["prometheus.io/path"] == "/metrics"
            assert int(notes["prometheus.io/port"]) == _ports(_container(d))[port_name]
            assert _served(apps[component], "/metrics")


def test_podmonitors_select_pods_with_the_metrics_port():
    objs = render("overlays/production")
    covered = set()
    for monitor in objs.kind("PodMonitor"):
        [component] = _selected(objs, monitor["spec"]["selector"])
        ports = _ports(_container(_deployment(objs, component)))
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] == METRICS_PORT[component] and endpoint["port"] in ports
            assert endpoint["path"] == "/metrics"
        covered.add(component)
    assert covered == set(METRICS_PORT)


# -- network policy ---------------------------------------------------------------------------


def _peer_ok(peer: dict[str, Any]) -> bool:
    """A peer allowed to reach protected ports: roomcast pods, client pods, or Prometheus."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        return peer == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        }
    labels = peer["podSelector"].get("matchLabels") or {}
    return labels.get(NAME) == "roomcast" or labels == {"roomcast/client": "true"}


@pytest.mark.parametrize("target", TARGETS)
def test_network_policy_opens_only_the_public_port(target: str):
    objs = render(target)
    seen = set()
    for policy in objs.kind("NetworkPolicy"):
        spec = policy["spec"]
        [component] = _selected(objs, spec["podSelector"])
        seen.add(component)
        assert spec["policyTypes"] == ["Ingress"]
        ports = _ports(_container(_deployment(objs, component)))
        open_ports: set[str] = set()
        reachable: set[str] = set()
        for rule in spec["ingress"]:
            rule_ports = {p["port"] for p in rule["ports"]}
            assert rule_ports <= set(ports), f"{component}: unknown ports {rule_ports}"
            reachable |= rule_ports
            if "from" not in rule:
                open_ports |= rule_ports
                continue
            for peer in rule["from"]:
                assert _peer_ok(peer), f"{component}: unexpected peer {peer}"
                if "namespaceSelector" in peer:
                    # Prometheus reaches metrics ports only.
                    assert rule_ports == {METRICS_PORT[component]}, rule
        assert open_ports == ({"public"} if component == "gateway" else set())
        assert reachable == set(ports), (
            f"{component}: ports no rule admits: {set(ports) - reachable}"
        )
    assert seen == set(COMPONENTS)


def test_only_gateways_reach_the_fanout_port():
    objs = render("base")
    policy = objs.get("NetworkPolicy", "roomcast-router")
    [rule] = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {"fanout"}]
    assert [_selected(objs, peer["podSelector"]) for peer in rule["from"]] == [["gateway"]]


def test_only_routers_reach_the_peer_port():
    objs = render("base")
    policy = objs.get("NetworkPolicy", "roomcast-router")
    rules = [r for r in policy["spec"]["ingress"] if "peer" in {p["port"] for p in r["ports"]}]
    [rule] = rules
    assert {p["port"] for p in rule["ports"]} == {"peer"}
    assert [_selected(objs, peer["podSelector"]) for peer in rule["from"]] == [["router"]]


# -- production -------------------------------------------------------------------------------


def test_production_spreads_gateways_over_nodes():
    objs = render("overlays/production")
    spec = _deployment(objs, "gateway")["spec"]["template"]["spec"]
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = terms[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert _selected(objs, term["labelSelector"]) == ["gateway"]


def test_overlays_size_the_workloads_differently():
    dev, prod = render("overlays/dev"), render("overlays/production")
    for component in COMPONENTS:
        for dev_d, prod_d in zip(
            _deployments(dev, component), _deployments(prod, component), strict=True
        ):
            d = _container(dev_d)["resources"]
            p = _container(prod_d)["resources"]
            assert d != p, component
            for res in (d, p):
                assert set(res) == {"requests", "limits"}
                assert set(res["limits"]) == {"cpu", "memory"}
    assert _deployment(prod, "worker")["spec"]["replicas"] == 2
    [hpa] = prod.kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2
    images = {_container(d)["image"] for d in pod_templates(prod)}
    assert len(images) == 1 and images != {"roomcast:0.1.0"}
