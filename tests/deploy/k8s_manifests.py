"""Render the kustomize overlays and validate every object offline.

Kubernetes' own kinds are checked with kubernetes-validate (strict: unknown fields fail); the KEDA and
KubeRay custom resources against the openAPIV3Schema of their CRDs kept in schemas/, made strict the
same way (the API server rejects unknown fields of structural schemas under kubectl's strict validation).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = ("cpu-dev", "gpu", "kuberay")
# The oldest Kubernetes release the manifests must work on (gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.29"
CRD_FILES = {
    "keda.sh": ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"),
    "ray.io": ("ray.io_rayclusters.yaml",),
}


class RendererMissing(RuntimeError):
    pass


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise RendererMissing("neither kubectl nor kustomize is installed")


@functools.lru_cache(maxsize=None)
def render(relative_dir: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize k8s/<relative_dir>` prints."""
    result = subprocess.run([*kustomize_command(), str(K8S / relative_dir)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"kustomize failed for {relative_dir}:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _strict(schema: dict) -> dict:
    """Reject properties a structural schema does not declare (unless it preserves unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, from the CRDs kept in schemas/."""
    found = {}
    for group, files in CRD_FILES.items():
        for name in files:
            # The C loader when present: the RayCluster CRD is close to 1 MB.
            crd = yaml.load((SCHEMAS / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                # metadata is validated by the API server itself, not by the CRD schema.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                found[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return found


def validate(obj: dict) -> None:
    """Raises AssertionError naming the object and the failing path."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    group = obj["apiVersion"].split("/")[0]
    if group in CRD_FILES:
        schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
        assert schema is not None, f"{name}: no CRD schema kept for {obj['apiVersion']}"
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{name}: {'/'.join(map(str, e.path))}: {e.message}") from None


def find(objs, kind: str, name: str) -> dict:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def find_prefixed(objs, kind: str, prefix: str) -> dict:
    """A generated object, whose name kustomize suffixes with a content hash."""
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(matches) == 1, f"expected one {kind}/{prefix}*, found {len(matches)}"
    return matches[0]


def pod_specs(objs):
    """(owner, pod spec, pod labels) of every workload, RayCluster groups included."""
    for o in objs:
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = spec["template"]
            yield o, template["spec"], template.get("metadata", {}).get("labels", {})
        elif o["kind"] == "RayCluster":
            groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
            for g in groups:
                yield o, g["template"]["spec"], g["template"].get("metadata", {}).get("labels", {})
