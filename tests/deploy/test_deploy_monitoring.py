"""monitoring/: the Prometheus alert rules pass `promtool check rules` and their unit tests (`promtool test rules`),
and the alerts and the Grafana dashboard query only metric families the processes really export, in PromQL that
parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.deploy_paths import REPO

MONITORING = REPO / "monitoring"
ALERTS = MONITORING / "prometheus" / "llada-alerts.yml"
DASHBOARD = MONITORING / "grafana" / "llada-serve.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian's prometheus; .ci/run "
                                                              "installs it)")
# Prometheus's own series a rule may use besides ours.
BUILTIN = {"up"}


def exported_sample_names() -> set[str]:
    """Every sample name the service's processes can export, from their registries."""
    from prometheus_client import CollectorRegistry

    from services.gateway.metrics import GatewayMetrics, JobsByStateCollector
    from services.http.metrics import REGISTRY as HTTP
    from services.webhooks.metrics import REGISTRY as WEBHOOKS
    from workers.engine.engine_backed import ENGINE_METRICS  # noqa: F401 (registers the engine's families)
    from workers.metrics import REGISTRY as WORKER
    from workers.reaper_metrics import REGISTRY as REAPER

    gateway = GatewayMetrics(CollectorRegistry()).registry
    gateway.register(JobsByStateCollector(dict))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for registry in (gateway, HTTP, WEBHOOKS, WORKER, REAPER):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(llada_[a-z_]+)", expr))


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


def alert_exprs() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@needs_promtool
def test_the_alert_rules_check_and_their_unit_tests_pass():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "llada-alerts.test.yml"], cwd=ALERTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_every_dashboard_query_is_promql_that_parses(tmp_path):
    """promtool parses each query as a recording rule's expression."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": expr}
                                                        for i, expr in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_and_dashboard_use_only_exported_families():
    exported = exported_sample_names() | BUILTIN
    for expr in alert_exprs() + dashboard_exprs():
        assert metric_names(expr) <= exported, (expr, metric_names(expr) - exported)


def test_the_dashboard_covers_what_an_operator_needs():
    queries = " ".join(dashboard_exprs())
    for family in ("llada_jobs", "llada_jobs_finished_total", "llada_job_attempt_seconds_bucket",
                   "llada_job_queue_wait_seconds_bucket", "llada_job_stage_seconds_bucket", "llada_worker_ready",
                   "llada_gateway_requests_total", "llada_reaper_jobs_total"):
        assert family in queries, family
    assert "sum(llada_jobs" not in queries.replace(" ", ""), "llada_jobs is per replica: max, never sum"
