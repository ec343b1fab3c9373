"""The Grafana dashboard and docs/kubernetes.md name only metrics and labels that exist.

The metric names come from the real declarations (router/metrics.py, gateway/metrics.py) on a
fresh registry, expanded into the series Prometheus stores (``_total`` for counters, ``_bucket``
/``_sum``/``_count`` for histograms).
"""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tests.deploy.kube import K8S, ROOT, require

DASHBOARD = K8S / "grafana" / "roomcast-dashboard.json"
DOC = ROOT / "docs" / "kubernetes.md"
# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "le"}
LATENCY = r"roomcast_gateway_delivery_latency_seconds_bucket\{"
METRIC = re.compile(r"\broomcast_[a-z0-9_]+\b")


def _series() -> dict[str, set[str]]:
    """Series name -> label names, for every roomcast metric."""
    from gateway.metrics import GatewayMetrics
    from router.metrics import RouterMetrics

    registry = CollectorRegistry()
    owners = (RouterMetrics(registry), GatewayMetrics(registry))
    # Label names of a labelled metric without children are not in any public output, so they
    # are read from the metric objects themselves.
    labels = {
        family.name: set(metric._labelnames)
        for owner in owners
        for metric in vars(owner).values()
        if isinstance(metric, Counter | Gauge | Histogram)
        for family in metric.describe()
    }
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            series[family.name + suffix] = labels[family.name]
    return series


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_importable_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert '{namespace=~"$namespace"}' in target["expr"], target["expr"]
    # Panels sit on the grid without overlapping.
    cells = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))


def test_dashboard_queries_name_real_series_and_labels():
    series = _series()
    for expr in _exprs():
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in series, f"{name} is not a roomcast series (in {expr})"
        known = TARGET_LABELS.union(*(series[n] for n in names))
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in known, f"{label} is not a label of {names} (in {expr})"
        # Counters are read as rates, never raw.
        for name in names:
            if name.endswith(("_total", "_bucket")):
                assert re.search(rf"(rate|increase)\({re.escape(name)}\{{", expr), expr


def test_dashboard_queries_are_valid_promql():
    """Parsed (and type-checked: rate() of an instant vector fails) as Prometheus would."""
    promql = require("promql_parser", "promql-parser")
    for expr in _exprs():
        # Grafana's variables, as Grafana substitutes them.
        concrete = expr.replace("$__rate_interval", "1m").replace("$namespace", ".*")
        assert "$" not in concrete, f"unknown variable in {expr}"
        try:
            promql.parse(concrete)
        except ValueError as exc:
            pytest.fail(f"invalid PromQL {expr!r}: {exc}", pytrace=False)


@pytest.mark.parametrize(
    "needed",
    [
        r"sum\(roomcast_gateway_connections\{",
        r"rate\(roomcast_gateway_deliveries_total\{",
        r"rate\(roomcast_router_deliveries_total\{",
        r"rate\(roomcast_gateway_messages_out_total\{",
        r"by \(reason\) \(rate\(roomcast_gateway_dropped_total\{",
        r"rate\(roomcast_router_fanout_dropped_total\{",
        r"rate\(roomcast_gateway_lost_total\{",
        r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(" + LATENCY,
        r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(" + LATENCY,
        r"by \(kind\) \(rate\(roomcast_router_commands_total\{",
        r"roomcast_router_rooms\{",
        r"roomcast_router_sockets\{",
        r"rate\(roomcast_gateway_resyncs_total\{",
        r"increase\(roomcast_router_gateway_expired_total\{",
        r"by \(status\) \(rate\(roomcast_router_requests_answered_total\{",
        r"by \(reason\) \(rate\(roomcast_gateway_disconnects_total\{",
    ],
)
def test_dashboard_covers(needed: str):
    assert any(re.search(needed, e) for e in _exprs()), needed


def test_docs_name_real_series_and_paths():
    text = DOC.read_text()
    series = _series()
    names = set(METRIC.findall(text))
    assert names, "docs/kubernetes.md names the alert-worthy metrics"
    unknown = {
        n for n in names if n not in series and n not in {s[: -len("_total")] for s in series}
    }
    assert not unknown, f"docs/kubernetes.md names unknown metrics: {sorted(unknown)}"
    for path in re.findall(r"\b(k8s/[\w./-]+)", text):
        assert (ROOT / path.rstrip(".")).exists(), f"docs/kubernetes.md names missing {path}"
