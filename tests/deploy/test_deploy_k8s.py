"""k8s/: every overlay renders with kustomize and validates against the Kubernetes, KEDA and KubeRay
schemas; the objects reference each other correctly; workers shut down warm and scale on the backlog."""

from __future__ import annotations

import base64

import pytest
from tests.deploy.deploy_paths import (DRAIN_MARGIN_S, GATEWAY_COMMAND, HEALTHCHECK_ROLES, HTTP_COMMAND,
                                       MIGRATE_COMMAND, REAPER_COMMAND, REPO, WEBHOOKS_COMMAND, WORKER_COMMAND)
from tests.deploy.k8s_manifests import (OVERLAYS, RendererMissing, find, find_prefixed, kustomize_command, pod_specs,
                           render, validate)

try:
    kustomize_command()
except RendererMissing as e:
    pytest.skip(str(e), allow_module_level=True)
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (dev extras)")

ALL_DIRS = ("base", *(f"overlays/{o}" for o in OVERLAYS))
# Created by the operator in the gpu/kuberay overlays (secrets.env.example), never committed.
EXTERNAL_SECRETS = {"llada-secrets"}
LLADA_COMPONENTS = ("gateway", "worker", "reaper", "webhooks", "migrate", "http")


def overlay(name: str):
    return render(f"overlays/{name}")


@pytest.mark.parametrize("directory", ALL_DIRS)
def test_renders_and_every_object_validates(directory):
    objs = render(directory)
    assert objs
    for obj in objs:
        validate(obj)


@pytest.mark.parametrize("name", OVERLAYS)
def test_everything_lives_in_the_llada_namespace(name):
    for obj in overlay(name):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "llada", f"{obj['kind']}/{obj['metadata']['name']}"


def _referenced(objs, kind_key):
    for owner, spec, _ in pod_specs(objs):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for source in c.get("envFrom", []):
                if kind_key in source:
                    yield owner, source[kind_key]["name"]
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get(kind_key.replace("Ref", "KeyRef"))
                if ref:
                    yield owner, ref["name"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_config_maps_secrets_and_claims_referenced_exist(name):
    objs = overlay(name)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for owner, ref in _referenced(objs, "configMapRef"):
        assert ("ConfigMap", ref) in names, f"{owner['metadata']['name']} needs ConfigMap {ref}"
    secrets = {ref for _, ref in _referenced(objs, "secretRef")}
    for auth in (o for o in objs if o["kind"] == "TriggerAuthentication"):
        secrets |= {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    missing = {s for s in secrets if ("Secret", s) not in names}
    allowed_external = EXTERNAL_SECRETS if name != "cpu-dev" else set()
    assert missing <= allowed_external, f"missing secrets {missing}"
    for owner, spec, _ in pod_specs(objs):
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            if claim:
                assert ("PersistentVolumeClaim", claim["claimName"]) in names


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", OVERLAYS)
def test_services_and_disruption_budgets_select_pods(name):
    objs = overlay(name)
    pod_labels = [labels for _, _, labels in pod_specs(objs)]
    for obj in objs:
        if obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert any(_matches(selector, labels) for labels in pod_labels), obj["metadata"]["name"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_llada_containers_run_the_agreed_commands_as_non_root(name):
    objs = overlay(name)
    expected = {"gateway": GATEWAY_COMMAND, "worker": WORKER_COMMAND, "reaper": REAPER_COMMAND,
                "webhooks": WEBHOOKS_COMMAND, "migrate": MIGRATE_COMMAND, "http": HTTP_COMMAND}
    seen = set()
    for owner, spec, labels in pod_specs(objs):
        component = labels.get("app.kubernetes.io/component")
        if labels.get("app.kubernetes.io/name") != "llada-serve" or component not in expected:
            continue
        seen.add(component)
        assert spec["containers"][0]["command"] == expected[component]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert seen == set(LLADA_COMPONENTS)


@pytest.mark.parametrize("name", OVERLAYS)
def test_gateway_has_grpc_probes_service_and_autoscaler(name):
    objs = overlay(name)
    gateway = find(objs, "Deployment", "llada-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in gateway["env"]}
    port = int(env["LLADA_GRPC_LISTEN"].rsplit(":", 1)[1])
    assert env["LLADA_GRPC_LISTEN"].startswith("0.0.0.0:"), "the kubelet probes the pod's IP"
    # Kubernetes' gRPC probe takes a number, not the port's name: it must be where the gateway listens.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["grpc"]["port"] == port, probe
    assert {p["containerPort"] for p in gateway["ports"] if p["name"] == "grpc"} == {port}
    service = find(objs, "Service", "llada-gateway")
    assert {p["port"] for p in service["spec"]["ports"]} >= {50051}
    hpa = find(objs, "HorizontalPodAutoscaler", "llada-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "llada-gateway"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def _settings_env(objs) -> dict[str, str]:
    return dict(find_prefixed(objs, "ConfigMap", "llada-config-")["data"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_worker_drain_fits_in_the_grace_period_below_the_visibility_timeout(name):
    """The preStop hook's SIGTERM starts the drain; the drain, then the hand-back and Ray's shutdown, end
    before the grace period does; and Redis never re-delivers a job that may still be running."""
    objs = overlay(name)
    spec = find(objs, "Deployment", "llada-worker")["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    settings = _settings_env(objs)
    drain = float(settings["LLADA_DRAIN_TIMEOUT_S"])
    visibility = float(settings["LLADA_VISIBILITY_TIMEOUT_S"])
    assert drain + DRAIN_MARGIN_S <= grace, "the kubelet would kill the worker before it handed its jobs back"
    assert grace < visibility, "Redis would re-deliver a job that is still finishing"
    if name != "cpu-dev":  # the tiny checkpoint's jobs take seconds
        assert drain >= 1800, "real jobs need a long drain"
    container = spec["containers"][0]
    assert {"configMapRef": {"name": find_prefixed(objs, "ConfigMap", "llada-config-")["metadata"]["name"]}} \
        in container["envFrom"], "the worker reads the drain timeout from the config map"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["llada-worker-drain"]
    assert (REPO / "docker" / "worker-drain.sh").is_file()


def _exec_role(probe: dict) -> str | None:
    command = probe.get("exec", {}).get("command", [])
    assert command[:1] == ["llada-healthcheck"], command
    return command[1]


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_component_is_probed_by_its_own_roles_check(name):
    """The worker, the reaper and the webhook dispatcher run `llada-healthcheck ROLE` for their own role (never
    the gateway image's gRPC check); the worker has no liveness probe (a restart reloads the model and kills its
    jobs); the migration job has none; every llada container whose root filesystem is read-only can write /tmp."""
    seen = set()
    for owner, spec, labels in pod_specs(overlay(name)):
        if labels.get("app.kubernetes.io/name") != "llada-serve":
            continue
        container = spec["containers"][0]
        component = labels["app.kubernetes.io/component"]
        probes = {k: v for k, v in container.items() if k.endswith("Probe")}
        if component == "migrate":
            assert probes == {}
        elif component in ("worker", "reaper", "webhooks"):
            role = HEALTHCHECK_ROLES[tuple(container["command"])]
            assert role == component and probes, component
            assert {_exec_role(p) for p in probes.values()} == {role}
            if component == "worker":
                assert set(probes) == {"readinessProbe"}
        if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, component
        seen.add(component)
    assert seen == set(LLADA_COMPONENTS)


@pytest.mark.parametrize("name", OVERLAYS)
def test_webhook_dispatcher_finishes_its_tries_within_the_grace_period(name):
    """On SIGTERM the dispatcher waits up to the try timeout + 5 s for its tries in flight: the kubelet must not
    kill it first. It reads the database and the object store from the same config as the gateway."""
    settings_module = pytest.importorskip("shared.settings", reason="shared.settings not written yet")
    objs = overlay(name)
    spec = find(objs, "Deployment", "llada-webhooks")["spec"]["template"]["spec"]
    default = settings_module.Settings.model_fields["webhook_timeout_s"].default
    timeout = float(_settings_env(objs).get("LLADA_WEBHOOK_TIMEOUT_S", default))
    assert spec.get("terminationGracePeriodSeconds", 30) >= timeout + 5 + 5
    gateway = find(objs, "Deployment", "llada-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert spec["containers"][0]["envFrom"] == gateway["envFrom"]


@pytest.mark.parametrize("name", ["gpu"])
def test_gpu_workers_request_gpus_and_mount_the_model_read_only(name):
    objs = overlay(name)
    spec = find(objs, "Deployment", "llada-worker")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models/LLaDA2.0-Uni"]["readOnly"] is True
    assert _settings_env(objs)["LLADA_MODEL_PATH"] == "/models/LLaDA2.0-Uni"
    strategy = find(objs, "Deployment", "llada-worker")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0, "a rollout must not need a spare GPU"


def test_cpu_dev_worker_runs_the_cpu_image_on_the_tiny_checkpoint():
    objs = overlay("cpu-dev")
    container = find(objs, "Deployment", "llada-worker")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "llada-serve/worker-cpu:dev"
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert _settings_env(objs)["LLADA_MODEL_PATH"] == "/models/tiny"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/models/tiny"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_workers_scale_on_the_postgres_backlog(name):
    objs = overlay(name)
    scaled = find(objs, "ScaledObject", "llada-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "llada-worker"
    find(objs, "Deployment", scaled["scaleTargetRef"]["name"])
    assert 0 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["cooldownPeriod"] > 0 and scaled["pollingInterval"] > 0
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "postgresql", "not a Redis LLEN: it misses reserved and priority messages"
    assert float(trigger["metadata"]["targetQueryValue"]) >= 1
    auth = find(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["connection"]


def test_cpu_dev_uses_local_images_without_pulling():
    for _, spec, _ in pod_specs(overlay("cpu-dev")):
        for c in spec["containers"]:
            if c["image"].startswith("llada-serve/"):
                assert c["image"].endswith(":dev") and c.get("imagePullPolicy", "IfNotPresent") != "Always"


def test_cpu_dev_scales_to_zero_and_keda_reaches_its_postgres():
    objs = overlay("cpu-dev")
    assert find(objs, "ScaledObject", "llada-worker")["spec"]["minReplicaCount"] == 0
    secret = find(objs, "Secret", "llada-secrets")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # KEDA runs in its own namespace: the database host must be the full service name.
    assert data["KEDA_POSTGRES_CONNECTION"].startswith("postgresql://")
    assert "@postgres.llada.svc.cluster.local:5432/" in data["KEDA_POSTGRES_CONNECTION"]
    find(objs, "StatefulSet", "postgres")
    find(objs, "Service", "postgres")


def _secret_env(name: str, objs) -> dict[str, str]:
    if name == "cpu-dev":
        secret = find(objs, "Secret", "llada-secrets")
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    from dotenv import dotenv_values

    return dict(dotenv_values(REPO / "k8s" / "overlays" / "gpu" / "secrets.env.example"))


@pytest.mark.parametrize("name", OVERLAYS)
def test_settings_are_valid_and_complete(name):
    settings_module = pytest.importorskip("shared.settings", reason="shared.settings not written yet")
    objs = overlay(name)
    env = _settings_env(objs) | _secret_env(name, objs)
    llada = {k[len("LLADA_"):].lower(): v for k, v in env.items() if k.startswith("LLADA_")}
    fields = set(settings_module.Settings.model_fields)
    assert sorted(set(llada) - fields) == [], "LLADA_* names that are no setting"
    settings = settings_module.Settings(**llada)
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url.startswith("redis://") and settings.object_store_url.startswith("s3://")
    assert settings.event_bus_url.startswith("redis://")


def test_gpu_overlay_documents_every_secret_key_the_dev_overlay_sets():
    dev = find(overlay("cpu-dev"), "Secret", "llada-secrets")["data"]
    example = (REPO / "k8s" / "overlays" / "gpu" / "secrets.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert keys == set(dev)


def test_kuberay_overlay_moves_the_gpus_to_the_ray_cluster():
    objs = overlay("kuberay")
    ray = find(objs, "RayCluster", "llada-ray")
    worker = find(objs, "Deployment", "llada-worker")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in worker["resources"].get("limits", {})
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["RAY_ADDRESS"] == f"ray://{ray['metadata']['name']}-head-svc:10001"
    groups = ray["spec"]["workerGroupSpecs"]
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
               for g in groups)
    assert ray["spec"]["enableInTreeAutoscaling"] is True
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(d for d in deps if d.startswith("ray=="))
    assert ray["spec"]["rayVersion"] == ray_pin.split("==")[1], "Ray client and cluster must match"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_front_door_is_probed_served_and_routed_and_holds_no_secrets(name):
    """HTTP probes where LLADA_HTTP_LISTEN says it listens (live: /healthz, ready: /readyz, which follows the
    gateway); it calls the gateway's Service at its gRPC port; the Service and the Ingress reach its port;
    it mounts no secret (it reads no database, queue or object store credentials)."""
    objs = overlay(name)
    spec = find(objs, "Deployment", "llada-http")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    port = int(env["LLADA_HTTP_LISTEN"].rsplit(":", 1)[1])
    assert env["LLADA_HTTP_LISTEN"].startswith("0.0.0.0:")
    probes = ("startupProbe", "readinessProbe", "livenessProbe")
    paths = {probe: container[probe]["httpGet"]["path"] for probe in probes}
    assert paths == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    assert all(container[p]["httpGet"]["port"] == port for p in paths)
    assert {p["containerPort"] for p in container["ports"] if p["name"] == "http"} == {port}
    gateway_service = find(objs, "Service", "llada-gateway")
    host, gateway_port = env["LLADA_HTTP_GATEWAY"].split(":")
    assert host == gateway_service["metadata"]["name"]
    assert int(gateway_port) in {p["port"] for p in gateway_service["spec"]["ports"]}
    assert not any("secretRef" in source for source in container["envFrom"])
    service = find(objs, "Service", "llada-http")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}
    ingress = find(objs, "Ingress", "llada-http")
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends and all(b == {"name": "llada-http", "port": {"name": "http"}} for b in backends)
    assert "/metrics" not in {path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}


# Each long-running component's metrics port setting, as its image sets it (docker/*.Dockerfile ENV).
METRICS_PORT_VARIABLES = {"gateway": "LLADA_METRICS_PORT", "http": "LLADA_HTTP_METRICS_PORT",
                          "worker": "LLADA_WORKER_METRICS_PORT", "reaper": "LLADA_REAPER_METRICS_PORT",
                          "webhooks": "LLADA_WEBHOOK_METRICS_PORT"}


def _image_env() -> dict[str, str]:
    """LLADA_* values the images set (the gateway image for all but the worker, whose images agree)."""
    import re

    env = {}
    for name in ("gateway.Dockerfile", "worker.Dockerfile", "worker-cpu.Dockerfile"):
        env.update(re.findall(r"(LLADA_[A-Z_]+)=(\S+)", (REPO / "docker" / name).read_text()))
    return env


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_long_running_component_is_scraped_where_its_metrics_listen(name):
    image_env = _image_env()
    assert image_env["LLADA_METRICS_HOST"] == "0.0.0.0", "metrics on loopback cannot be scraped"
    seen = set()
    for owner, spec, labels in pod_specs(overlay(name)):
        component = labels.get("app.kubernetes.io/component")
        if labels.get("app.kubernetes.io/name") != "llada-serve" or component not in METRICS_PORT_VARIABLES:
            continue
        container = spec["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        port = int(env.get(METRICS_PORT_VARIABLES[component], image_env[METRICS_PORT_VARIABLES[component]]))
        assert {p["containerPort"] for p in container["ports"] if p["name"] == "metrics"} == {port}, component
        annotations = owner["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)
        seen.add(component)
    assert seen == set(METRICS_PORT_VARIABLES)
